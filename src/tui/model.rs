//! The TUI's state and its update rules, without a terminal: keys and daemon events in,
//! commands for the daemon out. Everything here is a unit test away.
//!
//! Keys are chosen for a numeric keypad plus Enter, Esc and Backspace: digits pick staff,
//! products and amounts, `+`/`-` change quantities, `*` checks a balance, `/` voids the last
//! sale, `.` switches the payment method, Enter confirms, Esc goes back, `?` shows the help.

use crate::domain::{AgeFlag, Cents, MinAge};
use crate::protocol::api::{PaymentMethod, TerminalKind};
use crate::protocol::commands::{Command, CommandItem};
use crate::protocol::events::{Decision, Event, Status};
use crate::terminal::frontend::TerminalInfo;

/// How long the "present card" screen waits for a card before it gives up.
pub const PRESENT_TIMEOUT_MS: u64 = 30_000;
/// How long a result stays on screen before the terminal is ready again.
pub const RESULT_SHOWN_MS: u64 = 4_000;
/// Digits of an amount typed at a checkpoint (999999.99 at most).
const AMOUNT_DIGITS_MAX: usize = 8;
/// Digits of a staff member's number at the login screen, at most.
const STAFF_NUMBER_DIGITS_MAX: usize = 3;
/// Digits of a PIN, at most.
const PIN_DIGITS_MAX: usize = 12;
/// The quantity of one line, at most (the ledger's limit).
const QUANTITY_MAX: u32 = 99;
/// Lines of an order, at most (the ledger's limit).
const LINES_MAX: usize = 50;
/// Checkpoint presets, in cents, on keys 1 to 4.
pub const TOPUP_PRESETS_CENTS: [i64; 4] = [1_000, 2_000, 5_000, 10_000];

/// A key, as the terminal reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A digit 0-9.
    Digit(u8),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// `+`.
    Plus,
    /// `-`.
    Minus,
    /// `*`.
    Star,
    /// `/`.
    Slash,
    /// `.` or `,`.
    Dot,
    /// `?`.
    Help,
    /// Up arrow.
    Up,
    /// Down arrow.
    Down,
    /// Any other printable character.
    Char(char),
}

/// A product on the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    /// The catalog's id.
    pub product_id: String,
    /// Its name.
    pub name: String,
    /// Its price, VAT included.
    pub price: Cents,
    /// Its VAT rate in basis points, shown next to the price (`None`: the ledger did not
    /// say).
    pub tax_rate_basis_points: Option<u32>,
    /// The age it is sold from, marked on the menu (`18+`).
    pub min_age: Option<MinAge>,
    /// Set for an open price: staff type the unit price, 1 cent to this.
    pub open_price_max: Option<Cents>,
}

/// A staff member who may log in here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffItem {
    /// Id.
    pub staff_id: String,
    /// Name.
    pub name: String,
}

/// What the screen shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Pick a staff member by number, then type the PIN.
    Login {
        /// The staff member's number typed so far (more than nine staff: digits, Enter).
        number: String,
        /// The staff member picked (an index into the staff list).
        picked: Option<usize>,
        /// The PIN typed so far (shown masked).
        pin: String,
        /// Why the last attempt failed.
        message: Option<String>,
    },
    /// Bar: build an order.
    Order {
        /// Quantity per menu item.
        quantities: Vec<u32>,
        /// The item `+`/`-` act on.
        cursor: usize,
        /// The unit price typed per menu item with an open price (`None`: not typed yet).
        prices: Vec<Option<Cents>>,
    },
    /// Bar: type the unit price of the open-price item at `cursor` (cents, as digits);
    /// Enter adds one at that price, Esc goes back to the order.
    OpenPrice {
        /// The order being built.
        quantities: Vec<u32>,
        /// The item whose price is typed.
        cursor: usize,
        /// The unit prices typed so far.
        prices: Vec<Option<Cents>>,
        /// Digits typed, as cents.
        digits: String,
    },
    /// Checkpoint: type an amount (in cents, as digits) or pick a preset.
    Amount {
        /// Digits typed, as cents.
        digits: String,
        /// Cash or card.
        method: PaymentMethod,
        /// What staff saw on the holder's ID, set on the card with the top-up (↓ cycles:
        /// none, under 18, under 16).
        age_flag: Option<AgeFlag>,
    },
    /// Waiting for a card.
    Present {
        /// What the card pays or checks.
        what: Presenting,
        /// When the wait started.
        since_ms: u64,
    },
    /// Waiting for the daemon's decision after a card was read.
    Deciding,
    /// The outcome, until a key or the timeout.
    Result {
        /// The decision.
        decision: Decision,
        /// When it was shown.
        since_ms: u64,
    },
    /// A card's balance.
    Balance {
        /// The event.
        balance: Option<Cents>,
        /// `ledger` or `replica`.
        source: String,
        /// Its age, when from the replica.
        as_of: Option<String>,
        /// The card.
        card: String,
        /// When it was shown.
        since_ms: u64,
    },
    /// "Void the last sale?" Enter confirms, Esc does not.
    ConfirmVoid,
    /// Checkpoint: the current shift's totals (`None` until the daemon answered). Enter
    /// starts the close-out.
    Shift {
        /// The totals.
        summary: Option<ShiftView>,
    },
    /// Checkpoint: type the cash counted in the drawer (cents, as digits); Enter closes.
    CloseOut {
        /// Digits typed, as cents.
        digits: String,
        /// The totals it closes.
        summary: ShiftView,
    },
    /// Checkpoint: "close the shift with this much counted?" Enter closes it for good, Esc
    /// goes back to the count.
    ConfirmClose {
        /// The totals it closes.
        summary: ShiftView,
        /// Cash counted.
        counted: Cents,
    },
    /// Checkpoint: the closed shift and the drawer's difference, until a key.
    ShiftClosed {
        /// The totals closed.
        summary: ShiftView,
        /// Cash counted.
        counted: Cents,
        /// Counted minus expected.
        difference: Cents,
    },
}

/// A shift's totals, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftView {
    /// Since when (RFC 3339), if anything happened.
    pub opened_at: Option<String>,
    /// Cash taken, net of voids.
    pub cash: Cents,
    /// Card payments taken, net of voids.
    pub card: Cents,
    /// Top-ups.
    pub count: u64,
    /// Top-ups voided in the shift (not in `count`).
    pub voids: u64,
}

/// What a "present card" screen is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presenting {
    /// An order of this total.
    Order(Cents),
    /// A top-up of this amount, marking the card's holder as a minor when flagged.
    Topup(Cents, PaymentMethod, Option<AgeFlag>),
    /// A balance check.
    Balance,
}

/// What the model asks of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this command to the daemon.
    Send(Command),
    /// Leave the TUI.
    Quit,
}

/// The whole TUI state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Terminal name and point of sale, for the status bar.
    pub terminal: String,
    /// Bar or checkpoint.
    pub kind: TerminalKind,
    /// The menu (bar).
    pub menu: Vec<MenuItem>,
    /// Who may log in.
    pub staff: Vec<StaffItem>,
    /// Who is logged in.
    pub logged_in: Option<StaffItem>,
    /// The current screen.
    pub screen: Screen,
    /// The last status the daemon reported.
    pub status: Option<Status>,
    /// The help overlay is shown.
    pub help: bool,
    /// A one-line notice (an error from the daemon, a hint).
    pub notice: Option<String>,
    /// Checkpoint: the payment method chosen last.
    pub method: PaymentMethod,
    /// The current minute, for the age of the last sync (set by the run loop; `None` in
    /// tests that show the time of the last sync instead).
    pub minute: Option<chrono::DateTime<chrono::Utc>>,
    /// The local time's offset from UTC, in seconds, for times shown to staff (set by the
    /// run loop; `None` in tests, which then show UTC).
    pub utc_offset_s: Option<i32>,
    /// Lines shown above the key hints, always (the demo's keys); empty for staff.
    pub banner: Vec<String>,
    /// Lines added to the help overlay (the demo's keys).
    pub help_extra: Vec<String>,
}

impl Model {
    /// A model at the login screen.
    pub fn new(
        terminal: String,
        kind: TerminalKind,
        menu: Vec<MenuItem>,
        staff: Vec<StaffItem>,
    ) -> Model {
        Model {
            terminal,
            kind,
            menu,
            staff,
            logged_in: None,
            screen: Screen::Login {
                number: String::new(),
                picked: None,
                pin: String::new(),
                message: None,
            },
            status: None,
            help: false,
            notice: None,
            method: PaymentMethod::Cash,
            minute: None,
            utc_offset_s: None,
            banner: Vec::new(),
            help_extra: Vec::new(),
        }
    }

    /// A model for the terminal `info` describes, at the login screen.
    pub fn from_info(info: &TerminalInfo) -> Model {
        let mut model = Model::new(String::new(), info.kind, Vec::new(), Vec::new());
        model.describe(info);
        model
    }

    /// Takes the terminal's name, menu and staff list as the daemon's caches have them now.
    /// An order being built when the menu changes is cleared (its lines would point at other
    /// products), with a notice.
    pub fn describe(&mut self, info: &TerminalInfo) {
        self.terminal = if info.point_of_sale.is_empty() {
            info.terminal.clone()
        } else {
            format!("{} · {}", info.terminal, info.point_of_sale)
        };
        self.kind = info.kind;
        let menu: Vec<MenuItem> = info
            .menu
            .iter()
            .map(|p| MenuItem {
                product_id: p.product_id.as_str().to_owned(),
                name: p.name.clone(),
                price: p.price_cents,
                tax_rate_basis_points: p.tax_rate_basis_points,
                min_age: p.min_age,
                open_price_max: p.open_price_max_cents,
            })
            .collect();
        if menu != self.menu {
            self.menu = menu;
            if let Screen::Order { quantities, .. } | Screen::OpenPrice { quantities, .. } =
                &self.screen
            {
                if quantities.iter().any(|q| *q > 0) {
                    self.notice = Some("the menu changed: order cleared".into());
                }
                self.screen = self.home();
            }
        }
        let staff: Vec<StaffItem> = info
            .staff
            .iter()
            .map(|(id, name)| StaffItem {
                staff_id: id.clone(),
                name: name.clone(),
            })
            .collect();
        if staff != self.staff {
            self.staff = staff;
            // A number picked or typed may now mean someone else: start the login again
            // rather than send a PIN against another member's lockout.
            if matches!(&self.screen, Screen::Login { number, picked, .. }
                if picked.is_some() || !number.is_empty())
            {
                self.screen = Screen::Login {
                    number: String::new(),
                    picked: None,
                    pin: String::new(),
                    message: Some("the staff list changed: pick again".into()),
                };
            }
        }
    }

    /// The screen to go back to when an operation is over.
    fn home(&self) -> Screen {
        if self.logged_in.is_none() {
            return Screen::Login {
                number: String::new(),
                picked: None,
                pin: String::new(),
                message: None,
            };
        }
        match self.kind {
            TerminalKind::Bar => Screen::Order {
                quantities: vec![0; self.menu.len()],
                cursor: 0,
                prices: vec![None; self.menu.len()],
            },
            // The method chosen last stays: a queue of card payers is not rebooked as cash.
            // The age flag does not: it is about one person.
            TerminalKind::Checkpoint => Screen::Amount {
                digits: String::new(),
                method: self.method,
                age_flag: None,
            },
        }
    }

    /// The unit price of menu item `i`: its catalog price, or for an open price the one
    /// typed (`None` until typed).
    pub fn unit_price(&self, i: usize, prices: &[Option<Cents>]) -> Option<Cents> {
        let item = self.menu.get(i)?;
        match item.open_price_max {
            None => Some(item.price),
            Some(_) => prices.get(i).copied().flatten(),
        }
    }

    /// The order's total and its lines: (menu item, quantity, unit price).
    pub fn order_lines(
        &self,
        quantities: &[u32],
        prices: &[Option<Cents>],
    ) -> (Cents, Vec<(usize, u32, Cents)>) {
        let mut total = Cents::ZERO;
        let mut lines = Vec::new();
        for (i, q) in quantities.iter().enumerate() {
            if *q == 0 {
                continue;
            }
            if let Some(price) = self.unit_price(i, prices) {
                total = price
                    .checked_mul(i64::from(*q))
                    .and_then(|l| total.checked_add(l))
                    .unwrap_or(total);
                lines.push((i, *q, price));
            }
        }
        (total, lines)
    }

    /// Adds one of menu item `index` to the order, or, for an open price not typed yet,
    /// asks for its price first.
    fn pick(&self, quantities: Vec<u32>, index: usize, prices: Vec<Option<Cents>>) -> Screen {
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

    /// Closes the overlay on screen (the help), if one is open, and says whether one was: a
    /// key that closes an overlay does only that. Front ends call it before anything of
    /// their own (the demo's keys) sees the key; [`Model::on_key`] calls it first too.
    pub fn close_overlay(&mut self) -> bool {
        std::mem::replace(&mut self.help, false)
    }

    /// A key was pressed at `now_ms`.
    pub fn on_key(&mut self, key: Key, now_ms: u64) -> Vec<Action> {
        // Any key closes the help, and does nothing else.
        if self.close_overlay() {
            return Vec::new();
        }
        if key == Key::Help {
            self.help = true;
            return Vec::new();
        }
        self.notice = None;
        let screen = std::mem::replace(&mut self.screen, Screen::Deciding);
        let (screen, actions) = self.key_on(screen, key, now_ms);
        self.screen = screen;
        actions
    }

    fn key_on(&mut self, screen: Screen, key: Key, now_ms: u64) -> (Screen, Vec<Action>) {
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
                    Key::Enter => {
                        let (total, lines) = self.order_lines(&quantities, &prices);
                        if lines.is_empty() {
                            self.notice = Some("pick a product first (its number)".into());
                        } else if lines.len() > LINES_MAX {
                            self.notice = Some(format!("an order has at most {LINES_MAX} lines"));
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
            Screen::Present { what, since_ms } => match key {
                Key::Esc => (self.home(), vec![Action::Send(Command::Cancel {})]),
                _ => (Screen::Present { what, since_ms }, Vec::new()),
            },
            Screen::Deciding => (Screen::Deciding, Vec::new()),
            Screen::Result { .. } | Screen::Balance { .. } => (self.home(), Vec::new()),
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

    /// The daemon reported `event` at `now_ms`.
    pub fn on_event(&mut self, event: &Event, now_ms: u64) {
        match event {
            Event::Status(status) => self.status = Some(status.clone()),
            Event::Login {
                ok: true,
                staff_id: Some(id),
                name,
                ..
            } => {
                self.logged_in = Some(StaffItem {
                    staff_id: id.clone(),
                    name: name.clone().unwrap_or_default(),
                });
                self.screen = self.home();
            }
            Event::Login {
                ok: false, message, ..
            } => {
                if let Screen::Login { message: m, .. } = &mut self.screen {
                    *m = message.clone();
                }
            }
            Event::Card { .. } => {
                if matches!(self.screen, Screen::Present { .. }) {
                    self.screen = Screen::Deciding;
                }
            }
            Event::Decision(decision) => {
                self.screen = Screen::Result {
                    decision: decision.clone(),
                    since_ms: now_ms,
                };
            }
            Event::Balance {
                card_uid,
                balance_cents,
                ..
            } if matches!(
                self.screen,
                Screen::Shift { .. }
                    | Screen::CloseOut { .. }
                    | Screen::ConfirmClose { .. }
                    | Screen::ConfirmVoid
                    | Screen::Login { .. }
            ) =>
            {
                // A card tapped while the drawer is counted (or at login) does not wipe
                // what was typed: its balance goes on the notice line.
                self.notice = Some(format!(
                    "card {card_uid}: {}",
                    balance_cents.map_or("unknown card".to_owned(), |b| format!("balance {b}"))
                ));
            }
            Event::Balance {
                card_uid,
                balance_cents,
                source,
                as_of,
                ..
            } => {
                self.screen = Screen::Balance {
                    balance: *balance_cents,
                    source: (*source).to_owned(),
                    as_of: as_of.clone(),
                    card: card_uid.to_string(),
                    since_ms: now_ms,
                };
            }
            Event::Error { message, .. } => {
                self.notice = Some(message.clone());
                // An armed operation the daemon refused: back home.
                if matches!(
                    self.screen,
                    Screen::Present { .. } | Screen::Deciding | Screen::Shift { .. }
                ) {
                    self.screen = self.home();
                }
            }
            Event::CardError { message, .. } => self.notice = Some(message.clone()),
            Event::Synced { pending, .. } => {
                if let (Some(status), Some(p)) = (&mut self.status, pending) {
                    status.pending = *p;
                }
            }
            Event::Reader { state, name, .. } => {
                if let Some(status) = &mut self.status {
                    status.reader = name
                        .clone()
                        .filter(|_| *state == "connected")
                        .unwrap_or_else(|| (*state).to_owned());
                }
            }
            Event::Shift {
                opened_at,
                cash_cents,
                card_cents,
                count,
                voids,
            } => {
                if let Screen::Shift { summary } = &mut self.screen {
                    *summary = Some(ShiftView {
                        opened_at: opened_at.clone(),
                        cash: *cash_cents,
                        card: *card_cents,
                        count: *count,
                        voids: *voids,
                    });
                }
            }
            Event::ShiftClosed {
                opened_at,
                cash_cents,
                card_cents,
                count,
                voids,
                counted_cash_cents,
                difference_cents,
                ..
            } => {
                self.screen = Screen::ShiftClosed {
                    summary: ShiftView {
                        opened_at: Some(opened_at.clone()),
                        cash: *cash_cents,
                        card: *card_cents,
                        count: u64::try_from(*count).unwrap_or(0),
                        voids: *voids,
                    },
                    counted: *counted_cash_cents,
                    difference: *difference_cents,
                };
            }
            Event::LoggedOut => {
                self.logged_in = None;
                self.screen = Screen::Login {
                    number: String::new(),
                    picked: None,
                    pin: String::new(),
                    message: None,
                };
            }
            Event::Ready { online, .. } => {
                // The "starting" notice goes; an offline start is said once.
                self.notice =
                    (!online).then(|| "the ledger cannot be reached: selling offline".into());
            }
            Event::Armed { .. } | Event::Cancelled | Event::Login { .. } => {}
        }
    }

    /// Time passed: a result leaves the screen, a card that never came is given up.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Action> {
        match &self.screen {
            Screen::Present { since_ms, .. }
                if now_ms.saturating_sub(*since_ms) >= PRESENT_TIMEOUT_MS =>
            {
                self.notice = Some("no card: cancelled".into());
                self.screen = self.home();
                vec![Action::Send(Command::Cancel {})]
            }
            Screen::Result { since_ms, .. } | Screen::Balance { since_ms, .. }
                if now_ms.saturating_sub(*since_ms) >= RESULT_SHOWN_MS =>
            {
                self.screen = self.home();
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// Adds `delta` to the quantity of `index`, within 0 to [`QUANTITY_MAX`].
fn add(quantities: &mut [u32], index: usize, delta: i32) {
    if let Some(q) = quantities.get_mut(index) {
        *q = q.saturating_add_signed(delta).min(QUANTITY_MAX);
    }
}

#[cfg(test)]
mod tests {
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
                },
                MenuItem {
                    product_id: "water".into(),
                    name: "Water".into(),
                    price: Cents::new(200),
                    tax_rate_basis_points: Some(700),
                    min_age: None,
                    open_price_max: None,
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
        assert!(
            matches!(&m.screen, Screen::Login { message: Some(msg), .. } if msg == "wrong PIN")
        );
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
                what: Presenting::Topup(
                    Cents::new(500),
                    PaymentMethod::Cash,
                    Some(AgeFlag::Under18)
                ),
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
}
