//! The TUI's state and its update rules, without a terminal: keys and daemon events in,
//! commands for the daemon out. Everything here is a unit test away.
//!
//! Keys are chosen for a numeric keypad plus Enter, Esc and Backspace: digits pick staff,
//! products and amounts, `+`/`-` change quantities, `*` checks a balance, `/` voids the last
//! sale, `.` switches the payment method (checkpoint) or opens the cup returns (bar), Enter
//! confirms, Esc goes back, `?` shows the help.

use crate::domain::{AgeFlag, Cents, MinAge, ProductId};
use crate::protocol::api::{OrderItem, PaymentMethod, TerminalKind, VOUCHER_GRANT_UNITS_MAX};
use crate::protocol::commands::{Command, CommandItem, ReturnCommandItem};
use crate::protocol::events::{Decision, Event, Status};
use crate::terminal::core::deposits::order_deposits;
use crate::terminal::frontend::TerminalInfo;

mod keys;

/// How long the "present card" screen waits for a card before it gives up.
pub const PRESENT_TIMEOUT_MS: u64 = 30_000;
/// How long a result stays on screen before the terminal is ready again.
pub const RESULT_SHOWN_MS: u64 = 4_000;
/// Digits of an amount typed at a checkpoint (999999.99 at most).
const AMOUNT_DIGITS_MAX: usize = 8;
/// Digits of voucher units typed, at most (the daemon refuses more than 1,000).
const VOUCHER_DIGITS_MAX: usize = 4;
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
    /// A returnable item (a cup): its price is a deposit, credited back when it returns.
    pub returnable: bool,
    /// The returnable item it comes in (its product id): the order adds its deposit.
    pub deposit_product_id: Option<String>,
}

/// A staff member who may log in here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffItem {
    /// Id.
    pub staff_id: String,
    /// Name.
    pub name: String,
}

/// The `card_error` codes of a card refused in AES mode: they get a screen of their own.
pub const REFUSED_CARD_CODES: [&str; 4] = [
    "not_genuine",
    "not_aes_card",
    "not_issued",
    "unknown_key_version",
];

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
    /// Bar (`.`) or return station: returnable items handed back, before the card that
    /// receives their deposits.
    Returns {
        /// Quantity per returnable item, in the order of [`Model::returnables`].
        quantities: Vec<u32>,
        /// The item `+`/`-` act on (an index into the returnables).
        cursor: usize,
        /// A bar's order being built when `.` opened this screen: Esc goes back to it.
        order: Option<OrderDraft>,
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
    /// Checkpoint (`↑` from the amount): type the voucher units a supervisor grants.
    Vouchers {
        /// Digits typed, as units.
        digits: String,
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
    /// AES mode: the card presented failed its authentication (a clone, a blank or foreign
    /// card), until a key or the timeout; then back to `back` (still waiting for a card).
    CardRefused {
        /// `not_genuine`, `not_aes_card`, `not_issued`, `unknown_key_version`.
        code: String,
        /// The daemon's reason.
        message: String,
        /// The screen it interrupted.
        back: Box<Screen>,
        /// When it was shown.
        since_ms: u64,
    },
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

impl Screen {
    /// Leaves a [`Screen::CardRefused`] for the screen it interrupted; a wait for a card
    /// starts again (staff may present the right card).
    pub fn leave_refused(self, now_ms: u64) -> Screen {
        match self {
            Screen::CardRefused { back, .. } => match *back {
                Screen::Present { what, .. } => Screen::Present {
                    what,
                    since_ms: now_ms,
                },
                other => other,
            },
            other => other,
        }
    }
}

/// An order being built, kept while the bar takes cups back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDraft {
    /// Quantity per menu item.
    pub quantities: Vec<u32>,
    /// The unit price typed per menu item with an open price.
    pub prices: Vec<Option<Cents>>,
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
    /// A deposit return crediting this amount.
    Return(Cents),
    /// A voucher grant of this many units.
    Vouchers(i64),
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
                returnable: p.returnable,
                deposit_product_id: p.deposit_product_id.as_ref().map(|d| d.as_str().to_owned()),
            })
            .collect();
        if menu != self.menu {
            self.menu = menu;
            if let Screen::Order { quantities, .. }
            | Screen::OpenPrice { quantities, .. }
            | Screen::Returns { quantities, .. } = &self.screen
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
            TerminalKind::Return => self.returns_screen(None),
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

    /// The order's total, its deposits included, and its lines: (menu item, quantity, unit
    /// price).
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
                total = add_line(total, price, *q);
                lines.push((i, *q, price));
            }
        }
        for (_, q, deposit) in self.order_deposits(&lines) {
            total = add_line(total, deposit, q);
        }
        (total, lines)
    }

    /// The deposit lines the daemon adds to an order of `lines` (the terminal's one rule,
    /// `terminal::core::deposits`): (returnable menu item, quantity, deposit).
    pub fn order_deposits(&self, lines: &[(usize, u32, Cents)]) -> Vec<(usize, u32, Cents)> {
        let items: Vec<OrderItem> = lines
            .iter()
            .filter_map(|(i, q, price)| {
                Some(OrderItem {
                    product_id: ProductId::parse(&self.menu.get(*i)?.product_id).ok()?,
                    quantity: i64::from(*q),
                    unit_price_cents: *price,
                })
            })
            .collect();
        let index_of = |id: &str| self.menu.iter().position(|m| m.product_id == id);
        order_deposits(&items, |id| {
            let item = self.menu.get(index_of(id.as_str())?)?;
            let cup = self
                .menu
                .get(index_of(item.deposit_product_id.as_deref()?)?)?;
            cup.returnable
                .then(|| Some((ProductId::parse(&cup.product_id).ok()?, cup.price)))
                .flatten()
        })
        .into_iter()
        .filter_map(|d| {
            Some((
                index_of(d.product_id.as_str())?,
                u32::try_from(d.quantity).ok()?,
                d.unit_price_cents,
            ))
        })
        .collect()
    }

    /// The menu's returnable items (cups), as indexes into the menu.
    pub fn returnables(&self) -> Vec<usize> {
        (0..self.menu.len())
            .filter(|i| self.menu[*i].returnable)
            .collect()
    }

    /// An empty returns screen, keeping `order` to go back to.
    pub(super) fn returns_screen(&self, order: Option<OrderDraft>) -> Screen {
        Screen::Returns {
            quantities: vec![0; self.returnables().len()],
            cursor: 0,
            order,
        }
    }

    /// A return's amount and its lines: (menu item, quantity, deposit).
    pub fn return_lines(&self, quantities: &[u32]) -> (Cents, Vec<(usize, u32, Cents)>) {
        let mut amount = Cents::ZERO;
        let mut lines = Vec::new();
        for (i, q) in self.returnables().into_iter().zip(quantities) {
            if *q > 0 {
                amount = add_line(amount, self.menu[i].price, *q);
                lines.push((i, *q, self.menu[i].price));
            }
        }
        (amount, lines)
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
            Event::CardError { code, message, .. } if REFUSED_CARD_CODES.contains(code) => {
                let back = match std::mem::replace(&mut self.screen, Screen::Deciding) {
                    // Two refused cards in a row: back to what was there before the first.
                    Screen::CardRefused { back, .. } => back,
                    other => Box::new(other),
                };
                self.screen = Screen::CardRefused {
                    code: (*code).to_owned(),
                    message: message.clone(),
                    back,
                    since_ms: now_ms,
                };
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
            Screen::CardRefused { since_ms, .. }
                if now_ms.saturating_sub(*since_ms) >= RESULT_SHOWN_MS =>
            {
                let screen = std::mem::replace(&mut self.screen, Screen::Deciding);
                self.screen = screen.leave_refused(now_ms);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// `total` plus `quantity` × `price` (unchanged on an overflow the daemon refuses anyway).
fn add_line(total: Cents, price: Cents, quantity: u32) -> Cents {
    price
        .checked_mul(i64::from(quantity))
        .and_then(|l| total.checked_add(l))
        .unwrap_or(total)
}

#[cfg(test)]
mod tests;
