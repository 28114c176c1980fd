//! The overview page: a festival day's figures ([`crate::ledger::overview`]) as tiles,
//! Chart.js charts and tables.

use super::pages::{Who, html, message, query_params, require, store_failed};
use crate::ledger::api::AppState;
use crate::ledger::hq::auth::Action;
use crate::ledger::overview;
use crate::ledger::store::LedgerStore;
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{NaiveDate, Utc};

/// The earliest day the overview shows.
const OVERVIEW_FIRST_DAY: NaiveDate = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a date");

/// One hour's row of the overview.
struct HourRow {
    label: String,
    sales: String,
    sales_cents: i64,
    orders: i64,
    top_ups: String,
    top_ups_cents: i64,
    top_up_count: i64,
}

/// One point of sale's row of the overview.
struct PointRow {
    name: String,
    sales: String,
    sales_cents: i64,
    orders: i64,
    top_ups: String,
    top_ups_cents: i64,
    top_up_count: i64,
    offline: i64,
}

/// One card in debt.
struct DebtorRow {
    uid: String,
    balance: String,
    blocked: bool,
}

#[derive(Template)]
#[template(path = "overview.html", config = "src/ledger/hq/askama.toml")]
struct OverviewPage {
    who: Option<Who>,
    currency: String,
    day: String,
    previous_day: String,
    next_day: Option<String>,
    today: bool,
    live_s: u32,
    as_of: String,
    sales: String,
    orders: i64,
    top_ups: String,
    top_up_count: i64,
    online: i64,
    offline: i64,
    offline_share: String,
    offline_amount: String,
    on_cards: String,
    cards: i64,
    in_debt: i64,
    debt: String,
    hours: Vec<HourRow>,
    points: Vec<PointRow>,
    debtors: Vec<DebtorRow>,
    truncated: bool,
    chart_data: String,
}

/// The festival day `text` names, if the overview shows it (`YYYY-MM-DD`, from
/// [`OVERVIEW_FIRST_DAY`] to `today`); else why not, for the page.
fn asked_day(text: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) if d < OVERVIEW_FIRST_DAY => Err(format!(
            "{text}: the overview goes back to {OVERVIEW_FIRST_DAY} at most."
        )),
        Ok(d) if d > today => Err(format!("The festival day {text} has not started yet.")),
        Ok(d) => Ok(d),
        Err(_) => Err(format!(
            "{text:?} is not a day: write it as YYYY-MM-DD, such as 2026-07-03."
        )),
    }
}

pub(crate) async fn overview<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let festival = state.hq.festival_day;
    let now = Utc::now();
    let today = festival.day_of(now);
    let params = query_params(query.as_deref());
    let day = match params.get("day").filter(|d| !d.is_empty()) {
        None => today,
        Some(text) => match asked_day(text, today) {
            Ok(day) => day,
            Err(why) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    Some(Who::of(&session)),
                    "No such day",
                    why,
                    Some("/hq/overview".into()),
                );
            }
        },
    };
    let (from, to) = overview::day_range(festival, day);
    let data = match state
        .store
        .overview(
            from,
            to,
            overview::OVERVIEW_ROWS_MAX,
            overview::DEBTORS_SHOWN,
        )
        .await
    {
        Ok(d) => d,
        Err(e) => return store_failed(Some(Who::of(&session)), &e),
    };
    let o = overview::summarize(festival, day, data, overview::OVERVIEW_ROWS_MAX);
    let offset = festival.utc_offset();
    let hours: Vec<HourRow> = o
        .hours
        .iter()
        .map(|h| HourRow {
            label: h.start.with_timezone(&offset).format("%H:%M").to_string(),
            sales: h.sales.amount.to_string(),
            sales_cents: h.sales.amount.get(),
            orders: h.sales.operations,
            top_ups: h.top_ups.amount.to_string(),
            top_ups_cents: h.top_ups.amount.get(),
            top_up_count: h.top_ups.operations,
        })
        .collect();
    let points: Vec<PointRow> = o
        .points_of_sale
        .iter()
        .map(|p| PointRow {
            name: if p.name.is_empty() {
                "Stripe (online top-ups)".to_owned()
            } else {
                p.name.clone()
            },
            sales: p.sales.amount.to_string(),
            sales_cents: p.sales.amount.get(),
            orders: p.sales.operations,
            top_ups: p.top_ups.amount.to_string(),
            top_ups_cents: p.top_ups.amount.get(),
            top_up_count: p.top_ups.operations,
            offline: p.offline.operations,
        })
        .collect();
    let chart_data = serde_json::json!({
        "currency": state.currency.to_string(),
        "hours": hours.iter().map(|h| &h.label).collect::<Vec<_>>(),
        "hour_sales_cents": hours.iter().map(|h| h.sales_cents).collect::<Vec<_>>(),
        "hour_top_ups_cents": hours.iter().map(|h| h.top_ups_cents).collect::<Vec<_>>(),
        "points": points.iter().map(|p| &p.name).collect::<Vec<_>>(),
        "point_sales_cents": points.iter().map(|p| p.sales_cents).collect::<Vec<_>>(),
        "point_top_ups_cents": points.iter().map(|p| p.top_ups_cents).collect::<Vec<_>>(),
        "online": o.online.operations,
        "offline": o.offline.operations,
    })
    .to_string();
    let per_mille = o.offline_per_mille();
    let page = OverviewPage {
        who: Some(Who::of(&session)),
        currency: state.currency.to_string(),
        day: day.to_string(),
        previous_day: day.pred_opt().unwrap_or(day).to_string(),
        next_day: day
            .succ_opt()
            .filter(|d| *d <= today)
            .map(|d| d.to_string()),
        today: day == today,
        live_s: super::LIVE_UPDATE_S,
        as_of: now.with_timezone(&offset).format("%H:%M:%S").to_string(),
        sales: o.sales.amount.to_string(),
        orders: o.sales.operations,
        top_ups: o.top_ups.amount.to_string(),
        top_up_count: o.top_ups.operations,
        online: o.online.operations,
        offline: o.offline.operations,
        offline_share: format!("{}.{}%", per_mille / 10, per_mille % 10),
        offline_amount: o.offline.amount.to_string(),
        on_cards: o.cards.on_cards.to_string(),
        cards: o.cards.cards,
        in_debt: o.cards.in_debt,
        debt: o.cards.debt.to_string(),
        hours,
        points,
        debtors: o
            .cards
            .deepest
            .iter()
            .map(|(uid, balance, blocked)| DebtorRow {
                uid: uid.to_string(),
                balance: balance.to_string(),
                blocked: *blocked,
            })
            .collect(),
        truncated: o.truncated,
        chart_data,
    };
    html(StatusCode::OK, &page)
}
