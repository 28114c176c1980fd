//! Draws the [`Model`]: a status bar always at the top, the screen, a line of key hints,
//! and the help overlay. Pure: the same model, size and clock always draw the same cells.

use super::model::{Model, Presenting, Screen, ShiftView, TOPUP_PRESETS_CENTS};
use crate::domain::{AgeFlag, Cents};
use crate::protocol::api::{PaymentMethod, TerminalKind};
use crate::protocol::codes::ErrorCode;
use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

/// The smallest window the screens are drawn in.
pub const MIN_WIDTH: u16 = 40;
/// The smallest window the screens are drawn in.
pub const MIN_HEIGHT: u16 = 12;

/// Money as the screen shows it: `12.50`.
pub fn money(c: Cents) -> String {
    let v = c.get();
    let sign = if v < 0 { "-" } else { "" };
    let abs = v.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A VAT rate as the menu shows it: `19%`, `7%`, `5.5%`, `0%` (basis points: 1900 is 19 %).
pub fn percent(basis_points: u32) -> String {
    let (whole, hundredths) = (basis_points / 100, basis_points % 100);
    match hundredths {
        0 => format!("{whole}%"),
        h if h % 10 == 0 => format!("{whole}.{}%", h / 10),
        h => format!("{whole}.{h:02}%"),
    }
}

/// Draws the whole screen; `clock` is the time shown in the status bar (`HH:MM`).
pub fn draw(frame: &mut Frame<'_>, model: &Model, clock: &str) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = Paragraph::new(format!(
            "Window too small: enlarge it to at least {MIN_WIDTH}x{MIN_HEIGHT}."
        ))
        .wrap(Wrap { trim: true });
        frame.render_widget(text, area);
        return;
    }
    let banner_height = u16::try_from(model.banner.len().min(BANNER_LINES_MAX)).unwrap_or(0);
    let [status, body, notice, banner, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(1),
        Constraint::Length(banner_height),
        Constraint::Length(1),
    ])
    .areas(area);
    // The clock keeps its place at the right end, whatever the width of the rest.
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(7)]).areas(status);
    frame.render_widget(status_bar(model), left);
    frame.render_widget(
        Paragraph::new(format!(" {clock} "))
            .alignment(Alignment::Right)
            .style(Style::new().bg(Color::Black).fg(Color::White)),
        right,
    );
    draw_screen(frame, model, body);
    if let Some(n) = &model.notice {
        frame.render_widget(
            Paragraph::new(n.as_str()).style(Style::new().fg(Color::Yellow)),
            notice,
        );
    }
    if banner_height > 0 {
        let lines: Vec<Line<'_>> = model
            .banner
            .iter()
            .take(BANNER_LINES_MAX)
            .map(|l| Line::from(l.as_str()))
            .collect();
        frame.render_widget(
            Paragraph::new(lines).style(Style::new().fg(Color::Black).bg(Color::Cyan)),
            banner,
        );
    }
    frame.render_widget(
        Paragraph::new(hint_line(model)).style(Style::new().fg(Color::DarkGray)),
        hints,
    );
    if model.help {
        draw_help(frame, model, body);
    }
}

/// Rows of the login box that are not the staff list (borders, title line, PIN, message).
const LOGIN_CHROME_ROWS: usize = 9;
/// Characters of a staff member's name on the login screen.
const STAFF_NAME_CHARS: usize = 18;

/// Lines of the banner (the demo's keys) shown above the hints, at most.
const BANNER_LINES_MAX: usize = 2;

/// Characters of the reader's name shown in the status bar.
const READER_NAME_CHARS: usize = 18;

fn status_bar(model: &Model) -> Paragraph<'static> {
    let mut spans = vec![Span::styled(
        format!(" {} ", model.terminal),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    let staff = model
        .logged_in
        .as_ref()
        .map_or("not logged in".to_owned(), |s| s.name.clone());
    spans.push(Span::raw(format!("│ {staff} ")));
    match &model.status {
        Some(s) => {
            let (text, color) = if s.online {
                ("ONLINE", Color::Green)
            } else {
                ("OFFLINE", Color::Red)
            };
            spans.push(Span::raw("│ "));
            spans.push(Span::styled(
                text,
                Style::new().fg(color).add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(format!(" │ {} waiting ", s.pending)));
            if s.in_doubt > 0 || s.rejected > 0 {
                spans.push(Span::styled(
                    format!("│ {} in doubt, {} refused ", s.in_doubt, s.rejected),
                    Style::new().fg(Color::Yellow),
                ));
            }
            // The last contact with the ledger, either side (RFC 3339 UTC sorts as text).
            let last = s.last_sync_at.as_deref().max(s.last_feed_at.as_deref());
            let sync = sync_age(last, model.minute);
            let reader: String = s.reader.chars().take(READER_NAME_CHARS).collect();
            spans.push(Span::raw(format!("│ synced {sync} │ {reader} ")));
            if !s.journal_writable {
                spans.push(Span::styled(
                    "│ JOURNAL READ-ONLY ",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ));
            }
        }
        None => spans.push(Span::raw("│ starting… ")),
    }
    Paragraph::new(Line::from(spans)).style(Style::new().bg(Color::Black).fg(Color::White))
}

/// How long ago `last` (RFC 3339) was, to the minute, as of `now`: `<1 min`, `7 min`,
/// `3 h`; `never`. Without `now`, the time of day (UTC) of `last`.
pub fn sync_age(last: Option<&str>, now: Option<DateTime<Utc>>) -> String {
    let Some(last) = last else {
        return "never".into();
    };
    let Some(now) = now else {
        return last
            .get(11..16)
            .map_or_else(|| "?".into(), |t| format!("{t} UTC"));
    };
    let Ok(at) = DateTime::parse_from_rfc3339(last) else {
        return "?".into();
    };
    let minutes = (now - at.with_timezone(&Utc)).num_minutes();
    match minutes {
        ..1 => "<1 min".into(),
        1..60 => format!("{minutes} min"),
        _ => format!("{} h", minutes / 60),
    }
}

fn hint_line(model: &Model) -> String {
    match &model.screen {
        Screen::Login { picked: None, .. } if model.staff.len() <= 9 => {
            "number: who you are  ?: help".into()
        }
        Screen::Login { picked: None, .. } => "number, Enter: who you are  ?: help".into(),
        Screen::Login { .. } => "PIN, then Enter  Esc: back  ?: help".into(),
        Screen::Order { .. } => {
            "1-9 add  +/- qty  Enter charge  . cups  * balance  / void  Esc clear  ? help".into()
        }
        Screen::Returns { .. } => {
            "1-9 add a cup  +/- qty  Enter credit  * balance  / void  Esc clear/back  ? help".into()
        }
        Screen::OpenPrice { .. } => "digits: price in cents   Enter: add one   Esc: back".into(),
        Screen::Amount { .. } => {
            "- preset  . cash/card  ↓ minor  ↑ vouchers  + shift  Enter top up  ? help".into()
        }
        Screen::Vouchers { .. } => "digits: voucher units   Enter: grant   Esc: back".into(),
        Screen::Present { .. } => "present the card   Esc: cancel".into(),
        Screen::Deciding => "deciding…".into(),
        Screen::Result { .. } | Screen::Balance { .. } => "any key: next".into(),
        Screen::CardRefused { .. } => "any key: back".into(),
        Screen::ConfirmVoid => "Enter: void the last sale   Esc: keep it".into(),
        Screen::Shift { .. } => "Enter: close the shift (count the drawer)   Esc: back".into(),
        Screen::CloseOut { .. } => {
            "digits: cash counted, in cents   Enter: close   Esc: back".into()
        }
        Screen::ConfirmClose { .. } => "Enter: close the shift for good   Esc: count again".into(),
        Screen::ShiftClosed { .. } => "any key: next".into(),
    }
}

fn draw_screen(frame: &mut Frame<'_>, model: &Model, area: Rect) {
    match &model.screen {
        Screen::Login {
            number,
            picked,
            pin,
            message,
        } => {
            let mut lines = vec![
                Line::from(if model.staff.len() <= 9 {
                    "Who are you? Press your number."
                } else {
                    "Who are you? Type your number, then Enter."
                })
                .bold(),
                Line::from(""),
            ];
            // Staff in columns, top to bottom: as many rows as the screen leaves room for.
            let rows = usize::from(area.height)
                .saturating_sub(LOGIN_CHROME_ROWS)
                .max(1);
            for row in 0..rows.min(model.staff.len()) {
                let mut text = String::new();
                for (i, s) in model.staff.iter().enumerate().skip(row).step_by(rows) {
                    let mark = if *picked == Some(i) { "▶" } else { " " };
                    let name: String = s.name.chars().take(STAFF_NAME_CHARS).collect();
                    text.push_str(&format!("{mark}{:>3}  {name:<STAFF_NAME_CHARS$}  ", i + 1));
                }
                lines.push(Line::from(text.trim_end().to_owned()));
            }
            if !number.is_empty() {
                lines.push(Line::from(""));
                lines.push(Line::from(format!("Number: {number}")).bold());
            }
            if picked.is_some() {
                lines.push(Line::from(""));
                lines.push(Line::from(format!(
                    "PIN: {}",
                    "•".repeat(pin.chars().count())
                )));
            }
            if let Some(m) = message {
                lines.push(Line::from(""));
                lines.push(Line::styled(m.clone(), Style::new().fg(Color::Red)));
            }
            frame.render_widget(
                Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Login ")),
                area,
            );
        }
        Screen::Order {
            quantities,
            cursor,
            prices,
        }
        | Screen::OpenPrice {
            quantities,
            cursor,
            prices,
            ..
        } => {
            let [menu, order] =
                Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                    .areas(area);
            let lines: Vec<Line<'_>> = model
                .menu
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let key = if i < 9 {
                        format!("{}", i + 1)
                    } else if i == 9 {
                        "0".into()
                    } else {
                        " ".into()
                    };
                    // The VAT rate next to the price, so that staff can answer "how much
                    // of that is tax?" (nothing when the ledger did not say).
                    let rate = item.tax_rate_basis_points.map(percent).unwrap_or_default();
                    // An open price shows the one typed, or "open" until it is.
                    let price = match (item.open_price_max, prices.get(i).copied().flatten()) {
                        (None, _) => money(item.price),
                        (Some(_), Some(typed)) => money(typed),
                        (Some(_), None) => "open".into(),
                    };
                    // Restricted products are marked, so staff ask for ID before the tap.
                    let age = item.min_age.map(|a| format!("{a}+")).unwrap_or_default();
                    let text = format!("{key}  {:<18} {price:>8} {rate:>6} {age:>3}", item.name);
                    if i == *cursor {
                        Line::styled(text, Style::new().add_modifier(Modifier::REVERSED))
                    } else {
                        Line::from(text)
                    }
                })
                .collect();
            frame.render_widget(
                Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Menu ")),
                menu,
            );
            let (total, order_lines) = model.order_lines(quantities, prices);
            // The deposits the daemon adds are shown as lines of their own.
            let deposits = model.order_deposits(&order_lines);
            let mut lines: Vec<Line<'_>> = order_lines
                .iter()
                .chain(&deposits)
                .map(|(i, q, price)| {
                    let item = &model.menu[*i];
                    let line_total = price.checked_mul(i64::from(*q)).unwrap_or(Cents::ZERO);
                    Line::from(format!(
                        "{q:>2} × {:<14} {:>8}",
                        item.name,
                        money(line_total)
                    ))
                })
                .collect();
            lines.push(Line::from(""));
            lines.push(Line::from(format!("TOTAL {:>21}", money(total))).bold());
            frame.render_widget(
                Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Order ")),
                order,
            );
            if let Screen::OpenPrice { cursor, digits, .. } = &model.screen
                && let Some(item) = model.menu.get(*cursor)
            {
                let typed = Cents::new(digits.parse().unwrap_or(0));
                let max = item.open_price_max.map(money).unwrap_or_default();
                let text = vec![
                    Line::from(format!("{}: open price", item.name)),
                    Line::from(""),
                    Line::from(format!("Price: {}", money(typed))).bold(),
                    Line::from(format!("at most {max}")),
                    Line::from(""),
                    Line::from("Enter: add one   Esc: back"),
                ];
                let popup = centered(area, 36, 8);
                frame.render_widget(Clear, popup);
                frame.render_widget(
                    Paragraph::new(text).block(Block::new().borders(Borders::ALL).title(" Price ")),
                    popup,
                );
            }
        }
        Screen::Returns {
            quantities, cursor, ..
        } => {
            let (amount, _) = model.return_lines(quantities);
            let mut lines: Vec<Line<'_>> = model
                .returnables()
                .into_iter()
                .zip(quantities)
                .enumerate()
                .map(|(n, (i, q))| {
                    let key = if n < 9 {
                        format!("{}", n + 1)
                    } else if n == 9 {
                        "0".into()
                    } else {
                        " ".into()
                    };
                    let item = &model.menu[i];
                    let text = format!(
                        "{key}  {:<18} {:>8}   × {q:>2}",
                        item.name,
                        money(item.price)
                    );
                    if n == *cursor {
                        Line::styled(text, Style::new().add_modifier(Modifier::REVERSED))
                    } else {
                        Line::from(text)
                    }
                })
                .collect();
            lines.push(Line::from(""));
            lines.push(Line::from(format!("CREDIT {:>20}", money(amount))).bold());
            frame.render_widget(
                Paragraph::new(lines)
                    .block(Block::new().borders(Borders::ALL).title(" Cups back ")),
                area,
            );
        }
        Screen::Amount {
            digits,
            method,
            age_flag,
        } => {
            let cents = Cents::new(digits.parse().unwrap_or(0));
            let method = match method {
                PaymentMethod::Cash => "CASH",
                PaymentMethod::Card => "CARD",
            };
            let presets = TOPUP_PRESETS_CENTS
                .iter()
                .map(|c| money(Cents::new(*c)))
                .collect::<Vec<_>>()
                .join("   ");
            let age = match age_flag {
                None => Line::from("Age: not marked   (↓ to mark a minor)"),
                Some(flag) => Line::from(format!("Age: {}   (↓ to change)", age_flag_words(*flag)))
                    .bold()
                    .fg(Color::Magenta),
            };
            let lines = vec![
                Line::from(format!("Amount: {}", money(cents))).bold(),
                Line::from(format!("Paid by: {method}   (. to switch)")),
                age,
                Line::from(""),
                Line::from(format!("Presets (-): {presets}")),
            ];
            frame.render_widget(
                Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" Top-up ")),
                area,
            );
        }
        Screen::Vouchers { digits } => {
            let units = digits.parse::<i64>().unwrap_or(0);
            let lines = vec![
                Line::from(format!("Vouchers: {units}")).bold(),
                Line::from(""),
                Line::from("Staff and artist drinks: a supervisor's grant."),
                Line::from("Vouchers pay drinks that take them, never money."),
            ];
            frame.render_widget(
                Paragraph::new(lines)
                    .block(Block::new().borders(Borders::ALL).title(" Grant vouchers ")),
                area,
            );
        }
        Screen::Present { what, .. } => {
            let text = match what {
                Presenting::Order(total) => format!("{}\n\nPRESENT CARD", money(*total)),
                Presenting::Topup(amount, method, age_flag) => format!(
                    "+{}  {}{}\n\nPRESENT CARD",
                    money(*amount),
                    match method {
                        PaymentMethod::Cash => "CASH",
                        PaymentMethod::Card => "CARD",
                    },
                    age_flag
                        .map(|f| format!("\nmarks the card {}", age_flag_words(f)))
                        .unwrap_or_default()
                ),
                Presenting::Return(amount) => {
                    format!("+{}  CUPS BACK\n\nPRESENT CARD", money(*amount))
                }
                Presenting::Vouchers(units) => {
                    format!(
                        "+{units} {}\n\nPRESENT CARD",
                        vouchers_word(*units).to_uppercase()
                    )
                }
                Presenting::Balance => "BALANCE\n\nPRESENT CARD".into(),
            };
            big(frame, area, &text, Color::Cyan, false);
        }
        Screen::Deciding => big(frame, area, "…", Color::Cyan, false),
        Screen::CardRefused { code, message, .. } => {
            let (title, advice) = match code.as_str() {
                "not_issued" => ("CARD NOT ISSUED", "a blank card: issue it at a checkpoint"),
                "unknown_key_version" => (
                    "UNKNOWN CARD KEY",
                    "this terminal lacks the key of that card: call a supervisor",
                ),
                "not_aes_card" => ("NOT A FESTIVAL CARD", "nothing was charged"),
                _ => (
                    "CARD NOT GENUINE",
                    "nothing was charged: keep the card and call a supervisor",
                ),
            };
            // Its own colour and words: not a decline for money, a card that is not ours.
            big(
                frame,
                area,
                &format!("{title}\n\n{message}\n\n{advice}"),
                Color::Yellow,
                true,
            );
        }
        Screen::Result { decision, .. } => {
            let age_restricted = decision.reason.as_deref() == Some(AGE_RESTRICTED);
            let (word, color) = if decision.approved() {
                ("APPROVED", Color::Green)
            } else if age_restricted {
                // Its own colour: staff must not take it for an empty card and ask for money.
                ("UNDER AGE", Color::Magenta)
            } else {
                ("DECLINED", Color::Red)
            };
            let mut text = word.to_owned();
            if decision.status == "approved_offline" {
                text.push_str("\n(OFFLINE)");
            }
            if let Some(reason) = &decision.reason {
                text.push_str(&format!("\n\n{}", reason_text(reason)));
            }
            match decision.vouchers_granted {
                // A grant moves no money: say what it gave.
                Some(units) => {
                    text.push_str(&format!("\n\n{units} {} granted", vouchers_word(units)))
                }
                None => text.push_str(&format!(
                    "\n\n{} {}",
                    decision.operation,
                    money(decision.total_cents)
                )),
            }
            // Staff and artist drinks: say what vouchers paid, so nobody asks for money.
            if let Some(units) = decision.vouchers_used.filter(|u| *u > 0) {
                text.push_str(&format!("\npaid with {units} {}", vouchers_word(units)));
            }
            if let Some(b) = decision.balance_cents {
                text.push_str(&format!("\nbalance {}", money(b)));
            }
            // The whole area in green or red: readable from across the bar.
            big(frame, area, &text, color, true);
        }
        Screen::Balance {
            balance,
            source,
            as_of,
            card,
            ..
        } => {
            let amount = balance.map_or("unknown card".to_owned(), money);
            let mut text = format!("BALANCE\n\n{amount}\n\ncard {card}");
            if source == "replica" {
                // The replica's value: say how old it is, when known.
                match as_of.as_deref() {
                    Some(t) if model.minute.is_some() => text.push_str(&format!(
                        "\n(offline: {} old)",
                        sync_age(Some(t), model.minute)
                    )),
                    Some(t) => {
                        text.push_str(&format!("\n(offline: as of {})", sync_age(Some(t), None)))
                    }
                    None => text.push_str("\n(offline)"),
                }
            }
            big(frame, area, &text, Color::Cyan, false);
        }
        Screen::ConfirmVoid => big(
            frame,
            area,
            "VOID THE LAST SALE?\n\nEnter: yes   Esc: no",
            Color::Yellow,
            false,
        ),
        Screen::Shift { summary: None } => big(frame, area, "SHIFT\n\n…", Color::Cyan, false),
        Screen::Shift {
            summary: Some(summary),
        } => {
            let lines = shift_lines(summary, model.utc_offset_s);
            frame.render_widget(
                Paragraph::new(lines)
                    .block(Block::new().borders(Borders::ALL).title(" This shift ")),
                area,
            );
        }
        Screen::CloseOut { digits, summary } => {
            let counted = Cents::new(digits.parse().unwrap_or(0));
            let mut lines = shift_lines(summary, model.utc_offset_s);
            lines.push(Line::from(""));
            lines.push(Line::from(format!("Cash counted: {:>12}", money(counted))).bold());
            frame.render_widget(
                Paragraph::new(lines).block(
                    Block::new()
                        .borders(Borders::ALL)
                        .title(" Close the shift "),
                ),
                area,
            );
        }
        Screen::ConfirmClose { summary, counted } => {
            let text = format!(
                "CLOSE THE SHIFT?\n\ncash counted {}\nexpected {}\n\nEnter: close   Esc: count again",
                money(*counted),
                money(summary.cash)
            );
            big(frame, area, &text, Color::Yellow, false);
        }
        Screen::ShiftClosed {
            summary,
            counted,
            difference,
        } => {
            let (word, color) = match difference.get() {
                0 => ("DRAWER MATCHES".to_owned(), Color::Green),
                d if d < 0 => (
                    format!("DRAWER SHORT {}", money(Cents::new(-d))),
                    Color::Red,
                ),
                _ => (format!("DRAWER OVER {}", money(*difference)), Color::Yellow),
            };
            let text = format!(
                "SHIFT CLOSED\n\n{word}\n\nexpected cash {}\ncounted {}\n{} top-ups, card {}\n\nrecorded: goes to headquarters",
                money(summary.cash),
                money(*counted),
                summary.count,
                money(summary.card),
            );
            big(frame, area, &text, color, true);
        }
    }
}

/// An RFC 3339 time as staff read it: `YYYY-MM-DD HH:MM` in local time, or with `UTC` when
/// the offset is not known.
pub fn local_time(rfc3339: &str, utc_offset_s: Option<i32>) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(rfc3339) else {
        return rfc3339.to_owned();
    };
    match utc_offset_s.and_then(chrono::FixedOffset::east_opt) {
        Some(offset) => at
            .with_timezone(&offset)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        None => at
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
    }
}

/// A shift's totals, one per line.
fn shift_lines(summary: &ShiftView, utc_offset_s: Option<i32>) -> Vec<Line<'static>> {
    let since = summary
        .opened_at
        .as_deref()
        .map_or("no top-up yet".to_owned(), |t| local_time(t, utc_offset_s));
    vec![
        Line::from(format!("Since:        {since}")),
        Line::from(""),
        Line::from(format!("Cash:         {:>12}", money(summary.cash))).bold(),
        Line::from(format!("Card:         {:>12}", money(summary.card))),
        Line::from(format!(
            "Top-ups:      {:>12}   (and {} voided)",
            summary.count, summary.voids
        )),
    ]
}

/// The code of an age decline.
const AGE_RESTRICTED: &str = ErrorCode::AgeRestricted.as_str();

/// An age flag as staff read it.
pub fn age_flag_words(flag: AgeFlag) -> &'static str {
    match flag {
        AgeFlag::Under16 => "UNDER 16",
        AgeFlag::Under18 => "UNDER 18",
    }
}

/// A decline reason in words staff can say to the customer.
pub fn reason_text(code: &str) -> String {
    match ErrorCode::parse(code) {
        Some(ErrorCode::InsufficientFunds) => "not enough money on the card".into(),
        Some(ErrorCode::CardBlocked) => "card blocked: send to the top-up desk".into(),
        Some(ErrorCode::OfflineLimit) => "over the offline limit".into(),
        Some(ErrorCode::UnknownCardOffline) => "unknown card while offline".into(),
        Some(ErrorCode::JournalUnavailable) => "terminal storage failure: call a supervisor".into(),
        Some(ErrorCode::LimitExceeded) => "over the top-up limit".into(),
        Some(ErrorCode::AgeRestricted) => {
            "the card is marked as a minor:\ntake the 16+ / 18+ products off the order".into()
        }
        _ => code.to_owned(),
    }
}

/// Centred bold text in `color`, or, with `fill`, black on a `color` background.
fn big(frame: &mut Frame<'_>, area: Rect, text: &str, color: Color, fill: bool) {
    let style = if fill {
        Style::new().bg(color).fg(Color::Black)
    } else {
        Style::new().fg(color)
    };
    if fill {
        frame.render_widget(Block::new().style(style), area);
    }
    let lines: Vec<Line<'_>> = text.lines().map(Line::from).collect();
    let height = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let top = area.height.saturating_sub(height) / 2;
    let [_, middle] = Layout::vertical([Constraint::Length(top), Constraint::Min(1)]).areas(area);
    frame.render_widget(
        Paragraph::new(lines)
            .alignment(Alignment::Center)
            .style(style.add_modifier(Modifier::BOLD)),
        middle,
    );
}

fn draw_help(frame: &mut Frame<'_>, model: &Model, area: Rect) {
    let mut lines = vec![
        "Keys (a numeric keypad is enough)".to_owned(),
        String::new(),
    ];
    match model.kind {
        TerminalKind::Bar => lines.extend(
            [
                "1-9, 0   add one of product 1-9, 10 (open price: type it)",
                ".        cups handed back: credit their deposit to a card",
                "+ / -    one more / one less of the selected product",
                "16+ 18+  ask for ID: a card marked younger is refused",
                "↑ / ↓    select a product",
                "Bksp     remove the selected product",
                "Enter    charge the order: then present the card",
            ]
            .map(str::to_owned),
        ),
        TerminalKind::Return => lines.extend(
            [
                "1-9, 0   one more of cup kind 1-9, 10 handed back",
                "+ / -    one more / one less of the selected kind",
                "↑ / ↓    select a kind",
                "Enter    credit the deposits: then present the card",
            ]
            .map(str::to_owned),
        ),
        TerminalKind::Checkpoint => lines.extend(
            [
                "digits   the amount, in cents (2000 is 20.00)",
                "-        the presets, in turn",
                ".        cash or card",
                "↓        mark the holder under 18, under 16 (from an ID)",
                "↑        grant vouchers (supervisors only)",
                "Enter    top up: then present the card",
                "+        this shift's totals; Enter there closes it",
            ]
            .map(str::to_owned),
        ),
    }
    lines.extend(
        [
            "*        check a card's balance",
            "/        void the last sale (asks first)",
            "Esc      back, cancel, clear; on an empty screen: log out",
            "?        this help; any key closes it",
        ]
        .map(str::to_owned),
    );
    lines.extend(model.help_extra.iter().cloned());
    let popup = centered(area, 60, u16::try_from(lines.len() + 2).unwrap_or(u16::MAX));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>())
            .block(Block::new().borders(Borders::ALL).title(" Help ")),
        popup,
    );
}

/// "voucher" or "vouchers".
fn vouchers_word(units: i64) -> &'static str {
    if units == 1 { "voucher" } else { "vouchers" }
}

/// A rectangle of at most `width` × `height` in the middle of `area`.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let (width, height) = (area.width.min(width), area.height.min(height));
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_shown_as_percentages() {
        assert_eq!(percent(1900), "19%");
        assert_eq!(percent(700), "7%");
        assert_eq!(percent(550), "5.5%");
        assert_eq!(percent(1025), "10.25%");
        assert_eq!(percent(0), "0%");
        assert_eq!(percent(10_000), "100%");
    }

    #[test]
    fn money_is_shown_with_two_decimals() {
        assert_eq!(money(Cents::new(0)), "0.00");
        assert_eq!(money(Cents::new(5)), "0.05");
        assert_eq!(money(Cents::new(1250)), "12.50");
        assert_eq!(money(Cents::new(-450)), "-4.50");
        assert_eq!(money(Cents::new(i64::MIN)), "-92233720368547758.08");
    }
}
