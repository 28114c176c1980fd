//! The model's unit tests: keys and events in, screens and commands out.

use super::*;
use crate::domain::CardUid;

fn bar() -> Model {
    Model::new(
        "bar-1".into(),
        TerminalKind::Bar,
        vec![
            MenuItem {
                product_id: "beer-05".into(),
                name: "Beer 0.5 l".into(),
                price: Cents::new(450),
                tax_rate_basis_points: Some(1900),
                min_age: Some(MinAge::SIXTEEN),
                open_price_max: None,
                returnable: false,
                deposit_product_id: None,
            },
            MenuItem {
                product_id: "water".into(),
                name: "Water".into(),
                price: Cents::new(200),
                tax_rate_basis_points: Some(700),
                min_age: None,
                open_price_max: None,
                returnable: false,
                deposit_product_id: None,
            },
        ],
        vec![StaffItem {
            staff_id: "s-bar".into(),
            name: "Sam".into(),
        }],
    )
}

fn keys(m: &mut Model, keys: &[Key]) -> Vec<Action> {
    keys.iter().flat_map(|k| m.on_key(*k, 0)).collect()
}

fn logged_in(mut m: Model) -> Model {
    m.on_event(
        &Event::Login {
            ok: true,
            staff_id: Some("s-bar".into()),
            name: Some("Sam".into()),
            role: Some("bar"),
            message: None,
        },
        0,
    );
    m
}

fn decision(status: &'static str) -> Decision {
    Decision {
        client_request_id: None,
        operation: "order",
        card_uid: CardUid::parse("04A1B2C3").unwrap(),
        status,
        reason: None,
        total_cents: Cents::new(1100),
        balance_cents: Some(Cents::new(900)),
        target_client_request_id: None,
        vouchers_used: None,
        vouchers_granted: None,
    }
}

#[test]
fn login_picks_staff_by_number_and_sends_the_pin() {
    let mut m = bar();
    let actions = keys(
        &mut m,
        &[
            Key::Digit(7),
            Key::Digit(1),
            Key::Digit(1),
            Key::Digit(2),
            Key::Backspace,
            Key::Digit(3),
            Key::Enter,
        ],
    );
    assert_eq!(
        actions,
        vec![Action::Send(Command::Login {
            staff_id: "s-bar".into(),
            pin: "13".into()
        })]
    );
    m.on_event(
        &Event::Login {
            ok: false,
            staff_id: None,
            name: None,
            role: None,
            message: Some("wrong PIN".into()),
        },
        0,
    );
    assert!(matches!(&m.screen, Screen::Login { message: Some(msg), .. } if msg == "wrong PIN"));
    let m = logged_in(m);
    assert!(matches!(m.screen, Screen::Order { .. }));
}

#[test]
fn an_order_is_built_with_digits_and_quantities_and_charged_with_enter() {
    let mut m = logged_in(bar());
    let actions = keys(
        &mut m,
        &[
            Key::Digit(1),
            Key::Plus,
            Key::Digit(2),
            Key::Plus,
            Key::Minus,
            Key::Digit(9),
        ],
    );
    assert!(actions.is_empty());
    let Screen::Order {
        quantities,
        cursor,
        prices,
    } = &m.screen
    else {
        panic!("{:?}", m.screen)
    };
    assert_eq!((quantities.clone(), *cursor), (vec![2, 1], 1));
    assert_eq!(m.order_lines(quantities, prices).0, Cents::new(1100));
    let actions = keys(&mut m, &[Key::Enter]);
    assert_eq!(
        actions,
        vec![Action::Send(Command::Order {
            items: vec![
                CommandItem {
                    product_id: "beer-05".into(),
                    quantity: 2,
                    unit_price_cents: None,
                },
                CommandItem {
                    product_id: "water".into(),
                    quantity: 1,
                    unit_price_cents: None,
                },
            ]
        })]
    );
    assert_eq!(
        m.screen,
        Screen::Present {
            what: Presenting::Order(Cents::new(1100)),
            since_ms: 0
        }
    );
    // The card, the decision, then back to an empty order after the result.
    m.on_event(
        &Event::Card {
            uid: CardUid::parse("04A1B2C3").unwrap(),
            reader: "simulated".into(),
            card_type: None,
            key_version: None,
        },
        10,
    );
    assert_eq!(m.screen, Screen::Deciding);
    m.on_event(&Event::Decision(decision("approved_offline")), 20);
    assert!(matches!(m.screen, Screen::Result { .. }));
    assert!(m.on_tick(20 + RESULT_SHOWN_MS - 1).is_empty());
    assert!(matches!(m.screen, Screen::Result { .. }));
    m.on_tick(20 + RESULT_SHOWN_MS);
    assert_eq!(
        m.screen,
        Screen::Order {
            quantities: vec![0, 0],
            cursor: 0,
            prices: vec![None, None],
        }
    );
}

/// The bar's menu with a tip at an open price of at most 5.00, third.
fn bar_with_tip() -> Model {
    let mut m = bar();
    m.menu.push(MenuItem {
        product_id: "tip".into(),
        name: "Tip".into(),
        price: Cents::ZERO,
        tax_rate_basis_points: Some(0),
        min_age: None,
        open_price_max: Some(Cents::new(500)),
        returnable: false,
        deposit_product_id: None,
    });
    logged_in(m)
}

#[test]
fn an_open_price_is_typed_before_it_is_added_and_sent_with_its_line() {
    let mut m = bar_with_tip();
    // Its number asks for the price; Esc goes back without adding it.
    keys(&mut m, &[Key::Digit(3)]);
    assert!(
        matches!(m.screen, Screen::OpenPrice { cursor: 2, .. }),
        "{:?}",
        m.screen
    );
    keys(&mut m, &[Key::Esc]);
    let Screen::Order { quantities, .. } = &m.screen else {
        panic!("{:?}", m.screen)
    };
    assert_eq!(quantities, &vec![0, 0, 0]);
    // Beyond the maximum: a notice, and the price screen stays.
    keys(
        &mut m,
        &[Key::Digit(3), Key::Digit(6), Key::Digit(0), Key::Digit(0)],
    );
    keys(&mut m, &[Key::Enter]);
    assert!(
        m.notice.as_deref().is_some_and(|n| n.contains("5.00")),
        "{:?}",
        m.notice
    );
    assert!(matches!(m.screen, Screen::OpenPrice { .. }));
    // 1.50 is added; + adds another at the same price without asking again.
    keys(&mut m, &[Key::Backspace, Key::Backspace, Key::Backspace]);
    keys(
        &mut m,
        &[Key::Digit(1), Key::Digit(5), Key::Digit(0), Key::Enter],
    );
    keys(&mut m, &[Key::Plus, Key::Digit(2)]);
    let Screen::Order {
        quantities, prices, ..
    } = &m.screen
    else {
        panic!("{:?}", m.screen)
    };
    assert_eq!(quantities, &vec![0, 1, 2]);
    assert_eq!(m.order_lines(quantities, prices).0, Cents::new(200 + 300));
    assert_eq!(
        keys(&mut m, &[Key::Enter]),
        vec![Action::Send(Command::Order {
            items: vec![
                CommandItem {
                    product_id: "water".into(),
                    quantity: 1,
                    unit_price_cents: None,
                },
                CommandItem {
                    product_id: "tip".into(),
                    quantity: 2,
                    unit_price_cents: Some(150),
                },
            ]
        })]
    );
    // After the sale the next tip asks for its price again.
    m.on_event(&Event::Decision(decision("approved_online")), 10);
    m.on_tick(10 + RESULT_SHOWN_MS);
    keys(&mut m, &[Key::Digit(3)]);
    assert!(
        matches!(m.screen, Screen::OpenPrice { .. }),
        "{:?}",
        m.screen
    );
}

#[test]
fn a_checkpoint_marks_a_minor_for_one_top_up() {
    let mut m = logged_in(Model::new(
        "cp-1".into(),
        TerminalKind::Checkpoint,
        vec![],
        bar().staff,
    ));
    // ↓ cycles: under 18, under 16, none, under 18.
    let actions = keys(
        &mut m,
        &[
            Key::Down,
            Key::Down,
            Key::Down,
            Key::Down,
            Key::Digit(5),
            Key::Digit(0),
            Key::Digit(0),
            Key::Enter,
        ],
    );
    assert_eq!(
        actions,
        vec![Action::Send(Command::Topup {
            amount_cents: 500,
            payment_method: PaymentMethod::Cash,
            age_flag: Some(AgeFlag::Under18),
        })]
    );
    assert_eq!(
        m.screen,
        Screen::Present {
            what: Presenting::Topup(Cents::new(500), PaymentMethod::Cash, Some(AgeFlag::Under18)),
            since_ms: 0,
        }
    );
    // The next top-up starts unmarked: the flag was about one person.
    m.on_event(&Event::Decision(decision("approved_online")), 10);
    m.on_tick(10 + RESULT_SHOWN_MS);
    assert!(
        matches!(m.screen, Screen::Amount { age_flag: None, .. }),
        "{:?}",
        m.screen
    );
    // Esc with only a flag set clears it, and does not log out.
    assert!(keys(&mut m, &[Key::Down, Key::Esc]).is_empty());
    assert!(matches!(m.screen, Screen::Amount { age_flag: None, .. }));
}

#[test]
fn an_empty_order_is_not_charged_and_a_card_that_never_comes_is_given_up() {
    let mut m = logged_in(bar());
    assert!(keys(&mut m, &[Key::Enter]).is_empty());
    assert!(m.notice.is_some());
    keys(&mut m, &[Key::Digit(1), Key::Enter]);
    assert_eq!(
        m.on_tick(PRESENT_TIMEOUT_MS),
        vec![Action::Send(Command::Cancel {})]
    );
    assert!(matches!(m.screen, Screen::Order { .. }));
    // Esc while waiting cancels too.
    keys(&mut m, &[Key::Digit(1), Key::Enter]);
    assert_eq!(
        keys(&mut m, &[Key::Esc]),
        vec![Action::Send(Command::Cancel {})]
    );
}

#[test]
fn void_last_asks_first() {
    let mut m = logged_in(bar());
    assert!(keys(&mut m, &[Key::Slash, Key::Esc]).is_empty());
    assert!(matches!(m.screen, Screen::Order { .. }));
    assert_eq!(
        keys(&mut m, &[Key::Slash, Key::Enter]),
        vec![Action::Send(Command::VoidLast {})]
    );
}

#[test]
fn a_checkpoint_takes_presets_typed_amounts_and_the_method() {
    let mut m = logged_in(Model::new(
        "cp-1".into(),
        TerminalKind::Checkpoint,
        vec![],
        bar().staff,
    ));
    // `-` steps through the presets; `.` switches to card.
    let actions = keys(
        &mut m,
        &[Key::Minus, Key::Minus, Key::Minus, Key::Dot, Key::Enter],
    );
    assert_eq!(
        actions,
        vec![Action::Send(Command::Topup {
            amount_cents: TOPUP_PRESETS_CENTS[2],
            payment_method: PaymentMethod::Card,
            age_flag: None
        })]
    );
    let Screen::Present { .. } = m.screen else {
        panic!("{:?}", m.screen)
    };
    keys(&mut m, &[Key::Esc]);
    // Typed amounts are cents, whatever their first digit (a 2 once became a preset, and
    // "20" became 200.00), and the card method stays for the next top-up.
    let actions = keys(
        &mut m,
        &[
            Key::Digit(2),
            Key::Digit(0),
            Key::Digit(0),
            Key::Digit(0),
            Key::Enter,
        ],
    );
    assert_eq!(
        actions,
        vec![Action::Send(Command::Topup {
            amount_cents: 2_000,
            payment_method: PaymentMethod::Card,
            age_flag: None
        })]
    );
    keys(&mut m, &[Key::Esc, Key::Dot]);
    let actions = keys(
        &mut m,
        &[
            Key::Digit(0),
            Key::Digit(7),
            Key::Digit(5),
            Key::Digit(0),
            Key::Enter,
        ],
    );
    assert_eq!(
        actions,
        vec![Action::Send(Command::Topup {
            amount_cents: 750,
            payment_method: PaymentMethod::Cash,
            age_flag: None
        })]
    );
}

#[test]
fn more_than_nine_staff_log_in_by_number_and_enter() {
    let staff: Vec<StaffItem> = (1..=12)
        .map(|i| StaffItem {
            staff_id: format!("s-{i}"),
            name: format!("Staff {i}"),
        })
        .collect();
    let mut m = Model::new("bar-1".into(), TerminalKind::Bar, vec![], staff);
    // "1" alone picks nobody yet; "1", "2", Enter picks the twelfth.
    keys(&mut m, &[Key::Digit(1)]);
    assert!(matches!(&m.screen, Screen::Login { picked: None, number, .. } if number == "1"));
    keys(&mut m, &[Key::Digit(2), Key::Enter]);
    assert!(matches!(
        m.screen,
        Screen::Login {
            picked: Some(11),
            ..
        }
    ));
    let actions = keys(&mut m, &[Key::Digit(5), Key::Digit(5), Key::Enter]);
    assert_eq!(
        actions,
        vec![Action::Send(Command::Login {
            staff_id: "s-12".into(),
            pin: "55".into()
        })]
    );
    // A number nobody has is said so; Esc at the login screen never quits.
    let mut m2 = m.clone();
    m2.screen = Screen::Login {
        number: String::new(),
        picked: None,
        pin: String::new(),
        message: None,
    };
    keys(&mut m2, &[Key::Digit(4), Key::Digit(0), Key::Enter]);
    assert!(
        matches!(&m2.screen, Screen::Login { message: Some(msg), picked: None, .. } if msg.contains("40"))
    );
    assert!(keys(&mut m2, &[Key::Esc, Key::Esc]).is_empty());
}

#[test]
fn a_result_after_a_logout_goes_back_to_the_login_screen() {
    let mut m = bar();
    // A card tapped at the login screen shows its balance; then the login, not an order.
    m.on_event(
        &Event::Balance {
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            balance_cents: Some(Cents::new(500)),
            status: None,
            source: "ledger",
            as_of: None,
        },
        0,
    );
    assert!(m.notice.is_some());
    assert!(matches!(m.screen, Screen::Login { .. }));
    m.screen = Screen::Result {
        decision: decision("declined"),
        since_ms: 0,
    };
    m.on_tick(RESULT_SHOWN_MS);
    assert!(matches!(m.screen, Screen::Login { .. }));
}

#[test]
fn a_checkpoint_closes_its_shift_with_the_counted_cash() {
    let mut m = logged_in(Model::new(
        "cp-1".into(),
        TerminalKind::Checkpoint,
        vec![],
        bar().staff,
    ));
    assert_eq!(
        keys(&mut m, &[Key::Plus]),
        vec![Action::Send(Command::Shift {})]
    );
    // Nothing to close before the totals are known.
    assert!(keys(&mut m, &[Key::Enter]).is_empty());
    assert_eq!(m.screen, Screen::Shift { summary: None });
    m.on_event(
        &Event::Shift {
            opened_at: None,
            cash_cents: Cents::new(7_500),
            card_cents: Cents::ZERO,
            count: 2,
            voids: 1,
        },
        0,
    );
    // Enter, then "0", "0" stays "0" (no leading zeros), Esc goes back to the totals.
    keys(&mut m, &[Key::Enter, Key::Digit(0), Key::Digit(0)]);
    assert!(matches!(&m.screen, Screen::CloseOut { digits, .. } if digits == "0"));
    keys(&mut m, &[Key::Esc]);
    assert!(matches!(m.screen, Screen::Shift { summary: Some(_) }));
    let actions = keys(
        &mut m,
        &[
            Key::Enter,
            Key::Digit(7),
            Key::Digit(3),
            Key::Digit(5),
            Key::Digit(0),
            Key::Enter,
        ],
    );
    // Asked first; Esc goes back to the count with the digits kept.
    assert!(actions.is_empty());
    assert!(matches!(m.screen, Screen::ConfirmClose { .. }));
    keys(&mut m, &[Key::Esc]);
    assert!(matches!(&m.screen, Screen::CloseOut { digits, .. } if digits == "7350"));
    // A card tapped while counting does not lose the count.
    m.on_event(
        &Event::Balance {
            card_uid: CardUid::parse("04A1B2C3").unwrap(),
            balance_cents: None,
            status: None,
            source: "replica",
            as_of: None,
        },
        0,
    );
    assert!(matches!(&m.screen, Screen::CloseOut { digits, .. } if digits == "7350"));
    let actions = keys(&mut m, &[Key::Enter, Key::Enter]);
    assert_eq!(
        actions,
        vec![Action::Send(Command::CloseShift {
            counted_cash_cents: 7_350
        })]
    );
    // A refusal from the daemon goes back home with its message.
    m.on_event(
        &Event::error(
            crate::protocol::codes::ErrorCode::JournalUnavailable,
            "disk full",
        ),
        0,
    );
    assert_eq!(m.notice.as_deref(), Some("disk full"));
    assert!(matches!(m.screen, Screen::Amount { .. }));
}

#[test]
fn esc_on_an_empty_screen_logs_out_and_the_login_screen_comes_back() {
    let mut m = logged_in(bar());
    assert!(keys(&mut m, &[Key::Digit(1), Key::Esc]).is_empty());
    assert_eq!(
        keys(&mut m, &[Key::Esc]),
        vec![Action::Send(Command::Logout {})]
    );
    m.on_event(&Event::LoggedOut, 0);
    assert!(m.logged_in.is_none());
    assert!(matches!(m.screen, Screen::Login { picked: None, .. }));
}

#[test]
fn help_opens_and_any_key_closes_it_without_acting() {
    let mut m = logged_in(bar());
    keys(&mut m, &[Key::Help]);
    assert!(m.help);
    assert!(keys(&mut m, &[Key::Enter]).is_empty());
    assert!(!m.help);
    // Esc closes it and is spent: the order screen stays, nobody is logged out.
    let before = m.screen.clone();
    assert!(keys(&mut m, &[Key::Help, Key::Esc]).is_empty());
    assert!(!m.help);
    assert_eq!(m.screen, before);
    assert!(m.logged_in.is_some());
    // `?` closes it too, and only the next `?` opens it again.
    keys(&mut m, &[Key::Help, Key::Help]);
    assert!(!m.help);
    keys(&mut m, &[Key::Help]);
    assert!(m.help);
    // A front end closes it before its own keys: once, then there is nothing to close.
    assert!(m.close_overlay());
    assert!(!m.help);
    assert!(!m.close_overlay());
    assert_eq!(m.screen, before);
}
