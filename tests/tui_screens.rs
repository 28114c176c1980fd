//! Every TUI screen at 80x24 (and a too-small window), drawn by the real view on ratatui's
//! `TestBackend`, against snapshots committed in `tests/snapshots/`. A change to a screen
//! shows up as a diff to review (`cargo insta review`, or INSTA_UPDATE=always).
#![allow(clippy::unwrap_used)]

use cashless::domain::{CardUid, Cents, MinAge};
use cashless::protocol::api::TerminalKind;
use cashless::protocol::codes::ErrorCode;
use cashless::protocol::commands::{Command, ReturnCommandItem};
use cashless::protocol::events::{Decision, Event, Status};
use cashless::tui::model::{Action, Key, MenuItem, Model, Screen, StaffItem};
use cashless::tui::view::draw;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn staff() -> Vec<StaffItem> {
    [
        ("s-bar", "Sam Bar"),
        ("s-cash", "Cass Cashier"),
        ("s-super", "Sue Super"),
    ]
    .map(|(id, name)| StaffItem {
        staff_id: id.into(),
        name: name.into(),
    })
    .to_vec()
}

fn menu() -> Vec<MenuItem> {
    [
        (
            "beer-05",
            "Beer 0.5 l",
            450,
            1900,
            Some(MinAge::SIXTEEN),
            None,
        ),
        ("water", "Water", 200, 700, None, None),
        (
            "cocktail",
            "Cocktail",
            900,
            1900,
            Some(MinAge::EIGHTEEN),
            None,
        ),
        ("cola", "Cola", 300, 1900, None, None),
        ("tip", "Tip", 0, 0, None, Some(2000)),
        ("cup", "Cup", 200, 0, None, None),
    ]
    .map(|(id, name, price, rate, min_age, open_max)| MenuItem {
        product_id: id.into(),
        name: name.into(),
        price: Cents::new(price),
        tax_rate_basis_points: Some(rate),
        min_age,
        open_price_max: open_max.map(Cents::new),
        // The cup is returnable; beer comes in one.
        returnable: id == "cup",
        deposit_product_id: (id == "beer-05").then(|| "cup".into()),
    })
    .to_vec()
}

fn status(online: bool, pending: u64) -> Event {
    Event::Status(Status {
        online,
        pending,
        in_doubt: 0,
        rejected: 0,
        declined_offline: 0,
        closeouts_pending: 0,
        journal_writable: true,
        last_sync_at: Some("2026-07-01T21:13:58.120Z".into()),
        last_feed_at: None,
        reader: "ACS ACR122U PICC Interface 00 00".into(),
        staff: Some("s-bar".into()),
    })
}

fn bar() -> Model {
    let mut m = Model::new("bar-1".into(), TerminalKind::Bar, menu(), staff());
    m.on_event(&status(true, 0), 0);
    m.minute = Some(minute());
    m
}

/// Two minutes after the last sync in [`status`].
fn minute() -> chrono::DateTime<chrono::Utc> {
    "2026-07-01T21:16:00Z".parse().unwrap()
}

fn login(m: &mut Model) {
    m.on_event(
        &Event::Login {
            ok: true,
            staff_id: Some("s-bar".into()),
            name: Some("Sam Bar".into()),
            role: Some("bar"),
            message: None,
        },
        0,
    );
}

fn press(m: &mut Model, keys: &[Key]) {
    for k in keys {
        m.on_key(*k, 0);
    }
}

fn screen(m: &Model, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, m, "21:14")).unwrap();
    format!("{}", terminal.backend())
}

fn decision(status: &'static str, reason: Option<&str>, balance: Option<i64>) -> Event {
    Event::Decision(Decision {
        client_request_id: None,
        operation: "order",
        card_uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
        status,
        reason: reason.map(str::to_owned),
        total_cents: Cents::new(1100),
        balance_cents: balance.map(Cents::new),
        target_client_request_id: None,
        vouchers_used: None,
        vouchers_granted: None,
    })
}

#[test]
fn login_screens() {
    let mut m = bar();
    insta::assert_snapshot!("login_pick", screen(&m, 80, 24));
    press(&mut m, &[Key::Digit(1), Key::Digit(1), Key::Digit(2)]);
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
    insta::assert_snapshot!("login_pin_refused", screen(&m, 80, 24));
}

#[test]
fn bar_screens() {
    let mut m = bar();
    login(&mut m);
    press(&mut m, &[Key::Digit(1), Key::Plus, Key::Digit(2)]);
    insta::assert_snapshot!("bar_order", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter]);
    insta::assert_snapshot!("bar_present_card", screen(&m, 80, 24));
    m.on_event(&decision("approved_online", None, Some(900)), 0);
    insta::assert_snapshot!("bar_approved", screen(&m, 80, 24));
    m.on_event(&status(false, 3), 0);
    m.on_event(&decision("approved_offline", None, Some(900)), 0);
    insta::assert_snapshot!("bar_approved_offline", screen(&m, 80, 24));
    m.on_event(
        &decision("declined", Some("INSUFFICIENT_FUNDS"), Some(300)),
        0,
    );
    insta::assert_snapshot!("bar_declined", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter, Key::Slash]);
    insta::assert_snapshot!("bar_confirm_void", screen(&m, 80, 24));
    press(&mut m, &[Key::Esc, Key::Help]);
    insta::assert_snapshot!("bar_help", screen(&m, 80, 24));
}

/// AES mode: a clone is refused on a screen of its own; the order waits for the right card.
#[test]
fn a_card_that_fails_its_authentication_gets_its_own_screen() {
    let mut m = bar();
    login(&mut m);
    press(&mut m, &[Key::Digit(1), Key::Enter]);
    let waiting = m.screen.clone();
    assert!(matches!(waiting, Screen::Present { .. }));
    m.on_event(
        &Event::CardError {
            reader: "ACS ACR122U PICC Interface 00 00".into(),
            code: "not_genuine",
            message: "card not genuine: the card refused the key".into(),
        },
        1_000,
    );
    insta::assert_snapshot!("bar_card_not_genuine", screen(&m, 80, 24));
    // A blank card after it: its own words, the same way back.
    m.on_event(
        &Event::CardError {
            reader: "ACS ACR122U PICC Interface 00 00".into(),
            code: "not_issued",
            message: "a blank card: it was never issued".into(),
        },
        1_500,
    );
    assert!(screen(&m, 80, 24).contains("CARD NOT ISSUED"));
    // Any key, or the timeout, goes back to waiting for a card, with the order still armed.
    m.on_key(Key::Enter, 2_000);
    assert_eq!(
        m.screen,
        Screen::Present {
            what: match &waiting {
                Screen::Present { what, .. } => what.clone(),
                _ => unreachable!(),
            },
            since_ms: 2_000
        }
    );
    // A read to try again is only a notice.
    m.on_event(
        &Event::CardError {
            reader: "r".into(),
            code: "reader_error",
            message: "the card could not be read".into(),
        },
        2_100,
    );
    assert!(matches!(m.screen, Screen::Present { .. }));
}

#[test]
fn age_and_open_price_screens() {
    let mut m = bar();
    login(&mut m);
    // The tip (5) has an open price: its number asks for it.
    press(
        &mut m,
        &[
            Key::Digit(3),
            Key::Digit(5),
            Key::Digit(2),
            Key::Digit(5),
            Key::Digit(0),
        ],
    );
    insta::assert_snapshot!("bar_open_price", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter, Key::Enter]);
    // A staff card: vouchers paid two beers.
    let Event::Decision(mut paid) = decision("approved_online", None, Some(0)) else {
        unreachable!()
    };
    paid.vouchers_used = Some(2);
    m.on_event(&Event::Decision(paid), 0);
    insta::assert_snapshot!("bar_paid_with_vouchers", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter]);
    // A card marked under 18 and a cocktail (18+): its own screen, not "declined".
    m.on_event(&decision("declined", Some("AGE_RESTRICTED"), None), 0);
    insta::assert_snapshot!("bar_under_age", screen(&m, 80, 24));
}

#[test]
fn deposit_and_cup_return_screens() {
    let mut m = bar();
    login(&mut m);
    // Two beers: their two cups' deposit is a line of its own, in the total.
    press(&mut m, &[Key::Digit(1), Key::Digit(1), Key::Digit(2)]);
    insta::assert_snapshot!("bar_order_with_deposit", screen(&m, 80, 24));
    let Screen::Order {
        quantities, prices, ..
    } = &m.screen
    else {
        panic!("{:?}", m.screen)
    };
    assert_eq!(
        m.order_lines(quantities, prices).0,
        Cents::new(2 * 450 + 200 + 2 * 200)
    );
    // `.`: cups back, then three of them, credited to the next card.
    press(
        &mut m,
        &[Key::Esc, Key::Dot, Key::Digit(1), Key::Plus, Key::Plus],
    );
    insta::assert_snapshot!("bar_cups_back", screen(&m, 80, 24));
    let actions = m.on_key(Key::Enter, 0);
    assert_eq!(
        actions,
        vec![Action::Send(Command::Return {
            items: vec![ReturnCommandItem {
                product_id: "cup".into(),
                quantity: 3
            }]
        })]
    );
    insta::assert_snapshot!("bar_cups_present_card", screen(&m, 80, 24));
    let Event::Decision(mut credited) = decision("approved_offline", None, Some(1700)) else {
        unreachable!()
    };
    credited.operation = "return";
    credited.total_cents = Cents::new(600);
    m.on_event(&Event::Decision(credited), 0);
    insta::assert_snapshot!("bar_cups_credited", screen(&m, 80, 24));
    // Back at the order after the result. An order being built waits while cups come
    // back: Esc on the empty returns screen goes back to it.
    press(
        &mut m,
        &[Key::Enter, Key::Digit(2), Key::Dot, Key::Digit(1), Key::Esc],
    );
    assert!(matches!(m.screen, Screen::Returns { .. }), "{:?}", m.screen);
    press(&mut m, &[Key::Esc]);
    let Screen::Order { quantities, .. } = &m.screen else {
        panic!("{:?}", m.screen)
    };
    assert_eq!(
        quantities[1], 1,
        "the water ordered before `.` is still there"
    );

    // A return station: the returns screen is home, and Esc there logs out.
    let mut station = Model::new("ret-1".into(), TerminalKind::Return, menu(), staff());
    station.on_event(&status(true, 0), 0);
    station.minute = Some(minute());
    login(&mut station);
    insta::assert_snapshot!("return_station_home", screen(&station, 80, 24));
    assert_eq!(
        station.on_key(Key::Esc, 0),
        vec![Action::Send(Command::Logout {})]
    );
}

#[test]
fn balance_screen_from_the_replica() {
    let mut m = bar();
    login(&mut m);
    m.on_event(
        &Event::Balance {
            card_uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
            balance_cents: Some(Cents::new(1250)),
            status: Some("active".into()),
            source: "replica",
            as_of: Some("2026-07-01T21:02:11.000Z".into()),
        },
        0,
    );
    insta::assert_snapshot!("balance_replica", screen(&m, 80, 24));
}

#[test]
fn balance_screens_online_and_for_an_unknown_card() {
    let mut m = bar();
    login(&mut m);
    press(&mut m, &[Key::Star]);
    insta::assert_snapshot!("balance_present_card", screen(&m, 80, 24));
    m.on_event(
        &Event::Balance {
            card_uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
            balance_cents: Some(Cents::new(1250)),
            status: Some("active".into()),
            source: "ledger",
            as_of: None,
        },
        0,
    );
    insta::assert_snapshot!("balance_ledger", screen(&m, 80, 24));
    m.on_event(
        &Event::Balance {
            card_uid: CardUid::parse("04C3D4E5F60718").unwrap(),
            balance_cents: None,
            status: None,
            source: "replica",
            as_of: None,
        },
        0,
    );
    insta::assert_snapshot!("balance_unknown_card", screen(&m, 80, 24));
}

#[test]
fn checkpoint_screens() {
    let mut m = Model::new("cp-1".into(), TerminalKind::Checkpoint, Vec::new(), staff());
    m.minute = Some(minute());
    m.on_event(&status(true, 0), 0);
    login(&mut m);
    press(&mut m, &[Key::Minus, Key::Minus, Key::Minus, Key::Dot]);
    insta::assert_snapshot!("checkpoint_amount", screen(&m, 80, 24));
    press(&mut m, &[Key::Down]);
    insta::assert_snapshot!("checkpoint_amount_under_18", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter]);
    insta::assert_snapshot!("checkpoint_present_card", screen(&m, 80, 24));
    m.on_event(
        &Event::Card {
            uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
            reader: "ACS ACR122U PICC Interface 00 00".into(),
            card_type: Some("mifare_ultralight"),
            key_version: None,
        },
        0,
    );
    insta::assert_snapshot!("checkpoint_deciding", screen(&m, 80, 24));
    let Event::Decision(mut topup) = decision("approved_online", None, Some(7_250)) else {
        unreachable!()
    };
    topup.operation = "topup";
    topup.total_cents = Cents::new(5_000);
    m.on_event(&Event::Decision(topup), 0);
    insta::assert_snapshot!("checkpoint_approved", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter, Key::Help]);
    insta::assert_snapshot!("checkpoint_help", screen(&m, 80, 24));
}

#[test]
fn checkpoint_voucher_grant_screens() {
    let mut m = Model::new("cp-1".into(), TerminalKind::Checkpoint, Vec::new(), staff());
    m.minute = Some(minute());
    m.on_event(&status(true, 0), 0);
    login(&mut m);
    press(&mut m, &[Key::Up, Key::Digit(0), Key::Digit(3)]);
    insta::assert_snapshot!("checkpoint_vouchers", screen(&m, 80, 24));
    let sent = m.on_key(Key::Enter, 0);
    assert_eq!(
        sent,
        vec![Action::Send(Command::GrantVouchers { units: 3 })],
        "a leading 0 types nothing"
    );
    insta::assert_snapshot!("checkpoint_vouchers_present_card", screen(&m, 80, 24));
    m.on_event(
        &Event::Card {
            uid: CardUid::parse("04A1B2C3D4E5F6").unwrap(),
            reader: "ACS ACR122U PICC Interface 00 00".into(),
            card_type: Some("mifare_ultralight"),
            key_version: None,
        },
        0,
    );
    let Event::Decision(mut grant) = decision("approved_online", None, Some(0)) else {
        unreachable!()
    };
    grant.operation = "voucher_grant";
    grant.total_cents = Cents::ZERO;
    grant.vouchers_granted = Some(3);
    m.on_event(&Event::Decision(grant), 0);
    insta::assert_snapshot!("checkpoint_vouchers_granted", screen(&m, 80, 24));
    // A cashier's grant: the daemon refuses it, the notice says why, and the amount is back.
    press(&mut m, &[Key::Enter, Key::Up, Key::Digit(2), Key::Enter]);
    m.on_event(
        &Event::Error {
            code: ErrorCode::Forbidden,
            message: "only a supervisor grants vouchers".into(),
        },
        0,
    );
    assert!(matches!(m.screen, Screen::Amount { .. }), "{:?}", m.screen);
    assert_eq!(
        m.notice.as_deref(),
        Some("only a supervisor grants vouchers")
    );
}

#[test]
fn checkpoint_shift_screens() {
    let mut m = Model::new("cp-1".into(), TerminalKind::Checkpoint, Vec::new(), staff());
    m.minute = Some(minute());
    m.on_event(&status(true, 0), 0);
    login(&mut m);
    // `+` on the amount screen asks the daemon for the shift.
    press(&mut m, &[Key::Plus]);
    insta::assert_snapshot!("checkpoint_shift_waiting", screen(&m, 80, 24));
    m.on_event(
        &Event::Shift {
            opened_at: Some("2026-07-01T18:02:11.000Z".into()),
            cash_cents: Cents::new(42_000),
            card_cents: Cents::new(15_050),
            count: 37,
            voids: 1,
        },
        0,
    );
    insta::assert_snapshot!("checkpoint_shift", screen(&m, 80, 24));
    press(
        &mut m,
        &[
            Key::Enter,
            Key::Digit(4),
            Key::Digit(1),
            Key::Digit(8),
            Key::Digit(5),
            Key::Digit(0),
            Key::Digit(0),
        ],
    );
    insta::assert_snapshot!("checkpoint_close_out", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter]);
    insta::assert_snapshot!("checkpoint_confirm_close", screen(&m, 80, 24));
    let closed = |counted: i64| Event::ShiftClosed {
        client_request_id: cashless::domain::ClientRequestId::parse(
            "5f0c6f7e-1d1a-4a39-9d7e-3b1f1c2d0009",
        )
        .unwrap(),
        staff_id: "s-cash".into(),
        opened_at: "2026-07-01T18:02:11.000Z".into(),
        closed_at: "2026-07-02T02:00:00.000Z".into(),
        cash_cents: Cents::new(42_000),
        card_cents: Cents::new(15_050),
        count: 37,
        voids: 1,
        counted_cash_cents: Cents::new(counted),
        difference_cents: Cents::new(counted - 42_000),
    };
    for (name, counted) in [
        ("checkpoint_shift_closed_short", 41_850),
        ("checkpoint_shift_closed_match", 42_000),
        ("checkpoint_shift_closed_over", 42_500),
    ] {
        m.on_event(&closed(counted), 0);
        insta::assert_snapshot!(name, screen(&m, 80, 24));
    }
}

#[test]
fn the_demo_banner_and_its_help() {
    let mut m = bar();
    m.banner = vec![
        " DEMO │ a b c d: present card A-D │ n: cut the network │ m: to the checkpoint".into(),
        " PINs: Sam 1111, Cleo 2222, Max 9999 │ ledger: /tmp/cashless-demo/ledger.db".into(),
    ];
    m.help_extra = vec![
        "".into(),
        "a b c d  card A (50.00), B (8.00), C (new), D (lost)".into(),
        "n / m    cut or restore the network / bar or checkpoint".into(),
    ];
    insta::assert_snapshot!("demo_login", screen(&m, 80, 24));
    login(&mut m);
    press(&mut m, &[Key::Help]);
    insta::assert_snapshot!("demo_help", screen(&m, 80, 24));
}

#[test]
fn a_tiny_window_asks_to_be_enlarged_and_never_panics() {
    let mut m = bar();
    login(&mut m);
    insta::assert_snapshot!("too_small", screen(&m, 30, 8));
    for (w, h) in [(1, 1), (39, 24), (80, 11), (200, 60)] {
        screen(&m, w, h);
    }
}

#[test]
fn the_status_bar_shows_the_age_of_the_last_contact_with_the_ledger() {
    use cashless::tui::view::sync_age;
    let now = Some(minute());
    assert_eq!(sync_age(None, now), "never");
    assert_eq!(sync_age(Some("2026-07-01T21:15:30Z"), now), "<1 min");
    assert_eq!(sync_age(Some("2026-07-01T21:14:00Z"), now), "2 min");
    assert_eq!(sync_age(Some("2026-07-01T18:10:00Z"), now), "3 h");
    // A clock that went back: not a negative age.
    assert_eq!(sync_age(Some("2026-07-01T21:20:00Z"), now), "<1 min");
    assert_eq!(sync_age(Some("garbage"), now), "?");
    // Without the time, the time of day it happened.
    assert_eq!(sync_age(Some("2026-07-01T21:14:00Z"), None), "21:14 UTC");
    // The later of the two contacts counts.
    let mut m = bar();
    let Event::Status(mut s) = status(true, 0) else {
        unreachable!()
    };
    s.last_feed_at = Some("2026-07-01T21:15:59Z".into());
    m.on_event(&Event::Status(s), 0);
    assert!(screen(&m, 100, 24).contains("synced <1 min"));
}

#[test]
fn a_login_screen_with_more_staff_than_keys() {
    let staff: Vec<StaffItem> = (1..=23)
        .map(|i| StaffItem {
            staff_id: format!("s-{i:02}"),
            name: format!("Bartender {i}"),
        })
        .collect();
    let mut m = Model::new("bar-1".into(), TerminalKind::Bar, menu(), staff);
    m.minute = Some(minute());
    m.on_event(&status(true, 0), 0);
    press(&mut m, &[Key::Digit(1), Key::Digit(7)]);
    insta::assert_snapshot!("login_many_staff", screen(&m, 80, 24));
    press(&mut m, &[Key::Enter, Key::Digit(1)]);
    insta::assert_snapshot!("login_many_staff_pin", screen(&m, 80, 24));
}

#[test]
fn times_are_shown_in_local_time_once_the_offset_is_known() {
    use cashless::tui::view::local_time;
    let t = "2026-07-01T21:13:58.120Z";
    assert_eq!(local_time(t, None), "2026-07-01 21:13 UTC");
    assert_eq!(local_time(t, Some(2 * 3600)), "2026-07-01 23:13");
    assert_eq!(local_time(t, Some(-5 * 3600)), "2026-07-01 16:13");
    assert_eq!(local_time("not a time", Some(0)), "not a time");
}
