//! What a key does on each screen: the order and its open prices, the checkpoint's amount,
//! the login, the shift's close-out ([`Model::on_key`] hands each key here).

use super::*;

impl Model {
    /// A key on the returns screen: digits add one of the returnable item with that
    /// number, `+`/`-` change the selected one, Enter credits them to the next card, Esc
    /// clears, and on an empty screen goes back to the order being built (a bar) or logs out
    /// (a return station).
    fn returns_key(
        &mut self,
        (mut quantities, mut cursor, order): (Vec<u32>, usize, Option<OrderDraft>),
        key: Key,
        now_ms: u64,
    ) -> (Screen, Vec<Action>) {
        let count = quantities.len();
        match key {
            Key::Digit(d) => {
                let index = if d == 0 { 9 } else { usize::from(d) - 1 };
                if index < count {
                    add(&mut quantities, index, 1);
                    cursor = index;
                }
            }
            Key::Plus => add(&mut quantities, cursor, 1),
            Key::Minus => add(&mut quantities, cursor, -1),
            Key::Up => cursor = cursor.saturating_sub(1),
            Key::Down if cursor + 1 < count => cursor += 1,
            Key::Backspace => {
                if let Some(q) = quantities.get_mut(cursor) {
                    *q = 0;
                }
            }
            Key::Esc if quantities.iter().any(|q| *q > 0) => {
                quantities.iter_mut().for_each(|q| *q = 0);
            }
            Key::Esc if self.kind == TerminalKind::Return => {
                return (
                    Screen::Returns {
                        quantities,
                        cursor,
                        order,
                    },
                    vec![Action::Send(Command::Logout {})],
                );
            }
            Key::Esc => {
                let back = match order {
                    Some(draft) => Screen::Order {
                        quantities: draft.quantities,
                        cursor: 0,
                        prices: draft.prices,
                    },
                    None => self.home(),
                };
                return (back, Vec::new());
            }
            Key::Star => {
                return (
                    Screen::Present {
                        what: Presenting::Balance,
                        since_ms: now_ms,
                    },
                    vec![Action::Send(Command::Balance {})],
                );
            }
            Key::Slash => return (Screen::ConfirmVoid, Vec::new()),
            Key::Enter => {
                let (amount, lines) = self.return_lines(&quantities);
                if lines.is_empty() {
                    self.notice = Some("pick the cups handed back first (their number)".into());
                } else {
                    let items = lines
                        .iter()
                        .map(|(i, q, _)| ReturnCommandItem {
                            product_id: self.menu[*i].product_id.clone(),
                            quantity: i64::from(*q),
                        })
                        .collect();
                    return (
                        Screen::Present {
                            what: Presenting::Return(amount),
                            since_ms: now_ms,
                        },
                        vec![Action::Send(Command::Return { items })],
                    );
                }
            }
            _ => {}
        }
        (
            Screen::Returns {
                quantities,
                cursor,
                order,
            },
            Vec::new(),
        )
    }

    /// Adds one of menu item `index` to the order, or, for an open price not typed yet,
    /// asks for its price first.
    pub(super) fn pick(
        &self,
        quantities: Vec<u32>,
        index: usize,
        prices: Vec<Option<Cents>>,
    ) -> Screen {
        let mut quantities = quantities;
        if self.unit_price(index, &prices).is_none() {
            return Screen::OpenPrice {
                quantities,
                cursor: index,
                prices,
                digits: String::new(),
            };
        }
        add(&mut quantities, index, 1);
        Screen::Order {
            quantities,
            cursor: index,
            prices,
        }
    }

    pub(super) fn key_on(
        &mut self,
        screen: Screen,
        key: Key,
        now_ms: u64,
    ) -> (Screen, Vec<Action>) {
        match screen {
            Screen::Login {
                number,
                picked,
                pin,
                message,
            } => self.login_key(number, picked, pin, message, key),
            Screen::Order {
                mut quantities,
                mut cursor,
                mut prices,
            } => {
                let mut actions = Vec::new();
                match key {
                    Key::Digit(d) => {
                        // 1-9 pick the item and add one; 0 is the tenth.
                        let index = if d == 0 { 9 } else { usize::from(d) - 1 };
                        if index < self.menu.len() {
                            return (self.pick(quantities, index, prices), actions);
                        }
                    }
                    Key::Plus if cursor < self.menu.len() => {
                        return (self.pick(quantities, cursor, prices), actions);
                    }
                    Key::Minus => add(&mut quantities, cursor, -1),
                    Key::Up => cursor = cursor.saturating_sub(1),
                    Key::Down if cursor + 1 < self.menu.len() => cursor += 1,
                    Key::Backspace => {
                        if let Some(q) = quantities.get_mut(cursor) {
                            *q = 0;
                        }
                        // An open price is typed again for the next one.
                        if let Some(p) = prices.get_mut(cursor) {
                            *p = None;
                        }
                    }
                    // Esc clears the order; on an empty order it logs out.
                    Key::Esc if quantities.iter().all(|q| *q == 0) => {
                        return (
                            Screen::Order {
                                quantities,
                                cursor,
                                prices,
                            },
                            vec![Action::Send(Command::Logout {})],
                        );
                    }
                    Key::Esc => {
                        quantities.iter_mut().for_each(|q| *q = 0);
                        prices.iter_mut().for_each(|p| *p = None);
                    }
                    Key::Star => {
                        return (
                            Screen::Present {
                                what: Presenting::Balance,
                                since_ms: now_ms,
                            },
                            vec![Action::Send(Command::Balance {})],
                        );
                    }
                    Key::Slash => return (Screen::ConfirmVoid, Vec::new()),
                    // Cups handed back: the order being built waits (Esc there clears it).
                    Key::Dot if !self.returnables().is_empty() => {
                        // The order being built waits: Esc there comes back to it.
                        let draft = OrderDraft { quantities, prices };
                        return (self.returns_screen(Some(draft)), actions);
                    }
                    Key::Dot => self.notice = Some("nothing on this menu is returnable".into()),
                    Key::Enter => {
                        let (total, lines) = self.order_lines(&quantities, &prices);
                        if lines.is_empty() {
                            self.notice = Some("pick a product first (its number)".into());
                        } else if lines.len() + self.order_deposits(&lines).len() > LINES_MAX {
                            self.notice = Some(format!(
                                "an order has at most {LINES_MAX} lines, its cups included"
                            ));
                        } else {
                            let items = lines
                                .iter()
                                .map(|(i, q, price)| CommandItem {
                                    product_id: self.menu[*i].product_id.clone(),
                                    quantity: i64::from(*q),
                                    unit_price_cents: self.menu[*i]
                                        .open_price_max
                                        .map(|_| price.get()),
                                })
                                .collect();
                            actions.push(Action::Send(Command::Order { items }));
                            return (
                                Screen::Present {
                                    what: Presenting::Order(total),
                                    since_ms: now_ms,
                                },
                                actions,
                            );
                        }
                    }
                    _ => {}
                }
                (
                    Screen::Order {
                        quantities,
                        cursor,
                        prices,
                    },
                    actions,
                )
            }
            Screen::OpenPrice {
                quantities,
                cursor,
                mut prices,
                mut digits,
            } => {
                let max = self.menu.get(cursor).and_then(|m| m.open_price_max);
                match key {
                    Key::Digit(d)
                        if digits.len() < AMOUNT_DIGITS_MAX && !(digits.is_empty() && d == 0) =>
                    {
                        digits.push(char::from(b'0' + d));
                    }
                    Key::Backspace => {
                        digits.pop();
                    }
                    Key::Esc => {
                        return (
                            Screen::Order {
                                quantities,
                                cursor,
                                prices,
                            },
                            Vec::new(),
                        );
                    }
                    Key::Enter => match (digits.parse::<i64>(), max) {
                        (Ok(cents), Some(max)) if (1..=max.get()).contains(&cents) => {
                            if let Some(p) = prices.get_mut(cursor) {
                                *p = Some(Cents::new(cents));
                            }
                            return (self.pick(quantities, cursor, prices), Vec::new());
                        }
                        (_, max) => {
                            self.notice = Some(format!(
                                "type the price in cents: at most {}",
                                max.map_or_else(|| "0".into(), crate::tui::view::money)
                            ));
                        }
                    },
                    _ => {}
                }
                (
                    Screen::OpenPrice {
                        quantities,
                        cursor,
                        prices,
                        digits,
                    },
                    Vec::new(),
                )
            }
            Screen::Returns {
                quantities,
                cursor,
                order,
            } => self.returns_key((quantities, cursor, order), key, now_ms),
            Screen::Amount {
                mut digits,
                mut method,
                mut age_flag,
            } => match key {
                Key::Minus => {
                    // The presets, in turn: digits always type the amount itself.
                    let current = digits.parse::<i64>().ok();
                    let next = TOPUP_PRESETS_CENTS
                        .iter()
                        .position(|p| Some(*p) == current)
                        .map_or(0, |i| (i + 1) % TOPUP_PRESETS_CENTS.len());
                    digits = TOPUP_PRESETS_CENTS[next].to_string();
                    (
                        Screen::Amount {
                            digits,
                            method,
                            age_flag,
                        },
                        Vec::new(),
                    )
                }
                Key::Digit(d) => {
                    if digits.len() < AMOUNT_DIGITS_MAX && !(digits.is_empty() && d == 0) {
                        digits.push(char::from(b'0' + d));
                    }
                    (
                        Screen::Amount {
                            digits,
                            method,
                            age_flag,
                        },
                        Vec::new(),
                    )
                }
                Key::Backspace => {
                    digits.pop();
                    (
                        Screen::Amount {
                            digits,
                            method,
                            age_flag,
                        },
                        Vec::new(),
                    )
                }
                // Esc clears the amount; on an empty amount it logs out.
                Key::Esc if digits.is_empty() && age_flag.is_none() => (
                    Screen::Amount {
                        digits,
                        method,
                        age_flag,
                    },
                    vec![Action::Send(Command::Logout {})],
                ),
                Key::Esc => (
                    Screen::Amount {
                        digits: String::new(),
                        method,
                        age_flag: None,
                    },
                    Vec::new(),
                ),
                Key::Down => {
                    age_flag = match age_flag {
                        None => Some(AgeFlag::Under18),
                        Some(AgeFlag::Under18) => Some(AgeFlag::Under16),
                        Some(AgeFlag::Under16) => None,
                    };
                    (
                        Screen::Amount {
                            digits,
                            method,
                            age_flag,
                        },
                        Vec::new(),
                    )
                }
                Key::Dot => {
                    method = match method {
                        PaymentMethod::Cash => PaymentMethod::Card,
                        PaymentMethod::Card => PaymentMethod::Cash,
                    };
                    self.method = method;
                    (
                        Screen::Amount {
                            digits,
                            method,
                            age_flag,
                        },
                        Vec::new(),
                    )
                }
                Key::Star => (
                    Screen::Present {
                        what: Presenting::Balance,
                        since_ms: now_ms,
                    },
                    vec![Action::Send(Command::Balance {})],
                ),
                Key::Slash => (Screen::ConfirmVoid, Vec::new()),
                Key::Plus => (
                    Screen::Shift { summary: None },
                    vec![Action::Send(Command::Shift {})],
                ),
                // Staff and artist drinks: a supervisor's grant (the daemon refuses anyone
                // else's, and the notice says so).
                Key::Up => (
                    Screen::Vouchers {
                        digits: String::new(),
                    },
                    Vec::new(),
                ),
                Key::Enter => match digits.parse::<i64>() {
                    Ok(cents) if cents > 0 => (
                        Screen::Present {
                            what: Presenting::Topup(Cents::new(cents), method, age_flag),
                            since_ms: now_ms,
                        },
                        vec![Action::Send(Command::Topup {
                            amount_cents: cents,
                            payment_method: method,
                            age_flag,
                        })],
                    ),
                    _ => {
                        self.notice = Some("type an amount in cents, or - for a preset".into());
                        (
                            Screen::Amount {
                                digits,
                                method,
                                age_flag,
                            },
                            Vec::new(),
                        )
                    }
                },
                _ => (
                    Screen::Amount {
                        digits,
                        method,
                        age_flag,
                    },
                    Vec::new(),
                ),
            },
            Screen::Vouchers { mut digits } => match key {
                Key::Digit(d) => {
                    if digits.len() < VOUCHER_DIGITS_MAX && !(digits.is_empty() && d == 0) {
                        digits.push(char::from(b'0' + d));
                    }
                    (Screen::Vouchers { digits }, Vec::new())
                }
                Key::Backspace => {
                    digits.pop();
                    (Screen::Vouchers { digits }, Vec::new())
                }
                Key::Esc => (self.home(), Vec::new()),
                Key::Enter => match digits.parse::<i64>() {
                    Ok(units) if (1..=VOUCHER_GRANT_UNITS_MAX).contains(&units) => (
                        Screen::Present {
                            what: Presenting::Vouchers(units),
                            since_ms: now_ms,
                        },
                        vec![Action::Send(Command::GrantVouchers { units })],
                    ),
                    _ => {
                        self.notice = Some(format!(
                            "type how many vouchers to grant: 1 to {VOUCHER_GRANT_UNITS_MAX}"
                        ));
                        (Screen::Vouchers { digits }, Vec::new())
                    }
                },
                _ => (Screen::Vouchers { digits }, Vec::new()),
            },
            Screen::Present { what, since_ms } => match key {
                Key::Esc => (self.home(), vec![Action::Send(Command::Cancel {})]),
                _ => (Screen::Present { what, since_ms }, Vec::new()),
            },
            Screen::Deciding => (Screen::Deciding, Vec::new()),
            Screen::Result { .. } | Screen::Balance { .. } => (self.home(), Vec::new()),
            refused @ Screen::CardRefused { .. } => (refused.leave_refused(now_ms), Vec::new()),
            Screen::ConfirmVoid => match key {
                Key::Enter => (Screen::Deciding, vec![Action::Send(Command::VoidLast {})]),
                _ => (self.home(), Vec::new()),
            },
            Screen::Shift { summary } => match (key, summary) {
                (Key::Enter, Some(summary)) => (
                    Screen::CloseOut {
                        digits: String::new(),
                        summary,
                    },
                    Vec::new(),
                ),
                (Key::Esc, _) => (self.home(), Vec::new()),
                (_, summary) => (Screen::Shift { summary }, Vec::new()),
            },
            Screen::CloseOut {
                mut digits,
                summary,
            } => match key {
                Key::Digit(d) => {
                    if digits.len() < AMOUNT_DIGITS_MAX && digits != "0" {
                        digits.push(char::from(b'0' + d));
                    }
                    (Screen::CloseOut { digits, summary }, Vec::new())
                }
                Key::Backspace => {
                    digits.pop();
                    (Screen::CloseOut { digits, summary }, Vec::new())
                }
                Key::Esc => (
                    Screen::Shift {
                        summary: Some(summary),
                    },
                    Vec::new(),
                ),
                Key::Enter => match digits.parse::<i64>() {
                    Ok(counted) => (
                        Screen::ConfirmClose {
                            summary,
                            counted: Cents::new(counted),
                        },
                        Vec::new(),
                    ),
                    Err(_) => {
                        self.notice = Some("type the cash counted in the drawer".into());
                        (Screen::CloseOut { digits, summary }, Vec::new())
                    }
                },
                _ => (Screen::CloseOut { digits, summary }, Vec::new()),
            },
            Screen::ConfirmClose { summary, counted } => match key {
                Key::Enter => (
                    Screen::Deciding,
                    vec![Action::Send(Command::CloseShift {
                        counted_cash_cents: counted.get(),
                    })],
                ),
                Key::Esc => (
                    Screen::CloseOut {
                        digits: counted.get().to_string(),
                        summary,
                    },
                    Vec::new(),
                ),
                _ => (Screen::ConfirmClose { summary, counted }, Vec::new()),
            },
            Screen::ShiftClosed { .. } => (self.home(), Vec::new()),
        }
    }

    /// A key at the login screen: the staff member's number (one digit picks at once while
    /// there are at most nine; with more, digits and Enter), then the PIN and Enter.
    fn login_key(
        &mut self,
        mut number: String,
        picked: Option<usize>,
        mut pin: String,
        message: Option<String>,
        key: Key,
    ) -> (Screen, Vec<Action>) {
        let login = |number, picked, pin, message| Screen::Login {
            number,
            picked,
            pin,
            message,
        };
        let one_digit = self.staff.len() <= 9;
        match (picked, key) {
            (None, Key::Digit(d)) if one_digit => {
                let index = usize::from(d).wrapping_sub(1);
                if d >= 1 && index < self.staff.len() {
                    (login(String::new(), Some(index), pin, None), Vec::new())
                } else {
                    (login(number, picked, pin, message), Vec::new())
                }
            }
            (None, Key::Digit(d)) => {
                if number.len() < STAFF_NUMBER_DIGITS_MAX && !(number.is_empty() && d == 0) {
                    number.push(char::from(b'0' + d));
                }
                (login(number, picked, pin, None), Vec::new())
            }
            (None, Key::Backspace) => {
                number.pop();
                (login(number, picked, pin, message), Vec::new())
            }
            (None, Key::Enter) => match number.parse::<usize>() {
                Ok(n) if n >= 1 && n <= self.staff.len() => {
                    (login(String::new(), Some(n - 1), pin, None), Vec::new())
                }
                _ if number.is_empty() => (login(number, picked, pin, message), Vec::new()),
                _ => (
                    login(
                        String::new(),
                        None,
                        pin,
                        Some(format!("no staff member number {number}")),
                    ),
                    Vec::new(),
                ),
            },
            // Nothing quits from here: a terminal at a bar stays up (Ctrl-C or the service
            // manager stop it; the demo maps its own key).
            (None, Key::Esc) => (login(String::new(), None, pin, None), Vec::new()),
            (Some(_), Key::Digit(d)) => {
                if pin.len() < PIN_DIGITS_MAX {
                    pin.push(char::from(b'0' + d));
                }
                (login(number, picked, pin, message), Vec::new())
            }
            (Some(_), Key::Backspace) => {
                pin.pop();
                (login(number, picked, pin, message), Vec::new())
            }
            (Some(_), Key::Esc) => (login(String::new(), None, String::new(), None), Vec::new()),
            (Some(index), Key::Enter) if !pin.is_empty() => {
                let staff_id = self.staff[index].staff_id.clone();
                (
                    login(String::new(), picked, String::new(), None),
                    vec![Action::Send(Command::Login { staff_id, pin })],
                )
            }
            (picked, _) => (login(number, picked, pin, message), Vec::new()),
        }
    }
}

/// Adds `delta` to the quantity of `index`, within 0 to [`QUANTITY_MAX`].
fn add(quantities: &mut [u32], index: usize, delta: i32) {
    if let Some(q) = quantities.get_mut(index) {
        *q = q.saturating_add_signed(delta).min(QUANTITY_MAX);
    }
}
