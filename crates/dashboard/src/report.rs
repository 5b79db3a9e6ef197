//! The report: cities' statistics per day, the ranking, and one self-contained HTML page with
//! the charts drawn as inline SVG (no script, no network needed to view it).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::stats::{CityStats, Counter, basis_points};

/// Statistics of every city, one entry per day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Page title.
    pub title: String,
    /// What the page shows (seed, days, scale), one line.
    pub subtitle: String,
    /// The days, in order.
    pub days: Vec<ReportDay>,
    /// Residents per city (by name) that the ranking divides by: the simulated population.
    /// A city missing here is divided by its real-name residents.
    pub residents: BTreeMap<String, u64>,
    /// Seconds between reloads of a live page; `None` for a static report.
    pub refresh_s: Option<u32>,
}

/// One day of every city.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The cities.
    pub cities: Vec<CityStats>,
}

/// A city's place in the ranking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rank {
    /// 1 is the most active.
    pub rank: u32,
    /// City name.
    pub city: String,
    /// Payments by phone over the whole report.
    pub mobile_payments: u64,
    /// The denominator: simulated residents, else real-name residents.
    pub residents: u64,
    /// Payments by phone per resident, in thousandths.
    pub mobile_payments_per_resident_milli: u64,
    /// Cashless share by count, basis points.
    pub cashless_share_by_count_bp: u64,
    /// Cashless share by value, basis points.
    pub cashless_share_by_value_bp: u64,
}

impl Report {
    /// Each city over all days, in city-code order.
    pub fn totals(&self) -> Vec<CityStats> {
        let mut totals: BTreeMap<u32, CityStats> = BTreeMap::new();
        for day in &self.days {
            for city in &day.cities {
                match totals.get_mut(&city.city_code) {
                    Some(total) => total.merge(city),
                    None => {
                        totals.insert(city.city_code, city.clone());
                    }
                }
            }
        }
        totals.into_values().collect()
    }

    /// Cities by mobile payments per resident, most active first (ties by name).
    pub fn ranking(&self) -> Vec<Rank> {
        let mut ranks: Vec<Rank> = self
            .totals()
            .iter()
            .map(|city| {
                let residents = self.residents.get(&city.city).copied().unwrap_or(city.real_name_residents);
                let mobile = city.mobile().count;
                Rank {
                    rank: 0,
                    city: city.city.clone(),
                    mobile_payments: mobile,
                    residents,
                    mobile_payments_per_resident_milli: (mobile * 1000).checked_div(residents).unwrap_or(0),
                    cashless_share_by_count_bp: city.cashless_share_by_count_bp(),
                    cashless_share_by_value_bp: city.cashless_share_by_value_bp(),
                }
            })
            .collect();
        ranks.sort_by(|a, b| {
            b.mobile_payments_per_resident_milli.cmp(&a.mobile_payments_per_resident_milli).then_with(|| a.city.cmp(&b.city))
        });
        for (rank, entry) in (1u32..).zip(ranks.iter_mut()) {
            entry.rank = rank;
        }
        ranks
    }
}

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Fen as yuan: `123456` → `1,234.56`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    format!("{sign}{}.{:02}", thousands(fen / 100), fen % 100)
}

/// Basis points as a percentage with one decimal: `9345` → `93.4%`.
pub fn percent(bp: u64) -> String {
    format!("{}.{}%", bp / 100, bp % 100 / 10)
}

const METHOD_COLORS: &[(&str, &str, &str)] = &[
    ("payment_code", "#1677ff", "payment code"),
    ("qr", "#13c2c2", "QR scan"),
    ("ride_code", "#722ed1", "ride code"),
    ("bill", "#fa8c16", "bill"),
    ("cash", "#bfbfbf", "cash"),
];

const CATEGORY_COLORS: &[(&str, &str)] = &[
    ("retail", "#1677ff"),
    ("restaurant", "#fa541c"),
    ("transit", "#722ed1"),
    ("hospital", "#52c41a"),
    ("school", "#faad14"),
    ("social_security", "#eb2f96"),
    ("utility", "#13c2c2"),
    ("other", "#8c8c8c"),
];

fn category_color(category: &str) -> &'static str {
    CATEGORY_COLORS.iter().find(|(c, _)| *c == category).map_or("#8c8c8c", |(_, color)| color)
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI','Noto Sans CJK SC',sans-serif;margin:24px;color:#1f1f1f;background:#fafafa}
h1{margin:0 0 4px;font-size:26px}h2{font-size:18px;margin:28px 0 8px}.sub{color:#595959;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #e8e8e8;border-radius:8px;padding:12px 16px;min-width:200px}
.card .big{font-size:24px;font-weight:600}.card .lbl{color:#8c8c8c;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:4px 0;font-size:13px}td,th{border:1px solid #e8e8e8;padding:4px 8px;text-align:right}
th{background:#f5f5f5}td.name,th.name{text-align:left}svg{background:#fff;border:1px solid #e8e8e8;border-radius:8px}
.legend span{display:inline-block;margin-right:14px;font-size:13px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}";

/// The whole page.
pub fn render(report: &Report) -> String {
    let totals = report.totals();
    let ranking = report.ranking();
    let mut html = String::new();
    let refresh = report.refresh_s.map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">")).unwrap_or_default();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>{title}</title><style>{STYLE}</style></head><body>\
         <h1>{title}</h1><p class=\"sub\">{subtitle}</p>",
        title = escape(&report.title),
        subtitle = escape(&report.subtitle),
    );
    cards(&mut html, &totals);
    html.push_str("<h2>Ranking by mobile-payment activity</h2>");
    ranking_table(&mut html, &ranking);
    html.push_str("<h2>How each city pays: payments by method (count)</h2>");
    legend(&mut html, METHOD_COLORS.iter().map(|(_, color, label)| (*color, *label)));
    method_chart(&mut html, &totals);
    html.push_str("<h2>What each city pays for: volume by category (yuan)</h2>");
    legend(&mut html, CATEGORY_COLORS.iter().map(|(c, color)| (*color, *c)));
    category_chart(&mut html, &totals);
    html.push_str("<h2>Cities</h2>");
    city_table(&mut html, &totals);
    if report.days.len() > 1 {
        html.push_str("<h2>Day by day</h2>");
        day_table(&mut html, report);
    }
    let json = serde_json::to_string(report).unwrap_or_default().replace("</", "<\\/");
    let _ = write!(html, "<script type=\"application/json\" id=\"report-data\">{json}</script></body></html>");
    html
}

fn cards(html: &mut String, totals: &[CityStats]) {
    let mut all = Counter::default();
    let mut mobile = Counter::default();
    let mut real_name = 0;
    for city in totals {
        all.merge(city.total());
        mobile.merge(city.mobile());
        real_name += city.real_name_residents;
    }
    html.push_str("<div class=\"cards\">");
    for (metric, big, label) in [
        ("payments", thousands(all.count), "payments".to_owned()),
        ("volume", yuan(all.amount), "volume, yuan".to_owned()),
        ("cashless_share", percent(basis_points(mobile.count, all.count)), "paid by phone (by count)".to_owned()),
        ("real_name_residents", thousands(real_name), "real-name residents".to_owned()),
    ] {
        let _ = write!(html, "<div class=\"card\"><div class=\"big\" data-metric=\"total-{metric}\">{big}</div><div class=\"lbl\">{label}</div></div>");
    }
    html.push_str("</div>");
}

fn ranking_table(html: &mut String, ranking: &[Rank]) {
    html.push_str(
        "<table id=\"ranking\"><tr><th>#</th><th class=\"name\">city</th><th>mobile payments</th><th>residents</th>\
         <th>per resident</th><th>cashless share (count)</th><th>cashless share (value)</th></tr>",
    );
    for rank in ranking {
        let city = escape(&rank.city);
        let _ = write!(
            html,
            "<tr data-city=\"{city}\"><td>{}</td><td class=\"name\">{city}</td><td data-metric=\"mobile_payments\" data-value=\"{}\">{}</td>\
             <td>{}</td><td>{}.{:03}</td><td>{}</td><td>{}</td></tr>",
            rank.rank,
            rank.mobile_payments,
            thousands(rank.mobile_payments),
            thousands(rank.residents),
            rank.mobile_payments_per_resident_milli / 1000,
            rank.mobile_payments_per_resident_milli % 1000,
            percent(rank.cashless_share_by_count_bp),
            percent(rank.cashless_share_by_value_bp),
        );
    }
    html.push_str("</table>");
}

fn legend<'a>(html: &mut String, items: impl Iterator<Item = (&'a str, &'a str)>) {
    html.push_str("<div class=\"legend\">");
    for (color, label) in items {
        let _ = write!(html, "<span><i style=\"background:{color}\"></i>{}</span>", escape(label));
    }
    html.push_str("</div>");
}

const CHART_WIDTH: u64 = 860;
const LABEL_WIDTH: u64 = 110;
const BAR_HEIGHT: u64 = 26;
const ROW_HEIGHT: u64 = 38;

/// One chart row: a city and its segments (key, color, value).
type BarRow = (String, Vec<(String, &'static str, u64)>);

/// A horizontal stacked bar per city.
fn stacked_bars(html: &mut String, id: &str, rows: &[BarRow], unit: &dyn Fn(u64) -> String) {
    let max = rows.iter().map(|(_, s)| s.iter().map(|(_, _, v)| v).sum::<u64>()).max().unwrap_or(0).max(1);
    let height = ROW_HEIGHT * u64::try_from(rows.len()).unwrap_or(0) + 16;
    let plot = CHART_WIDTH - LABEL_WIDTH - 140;
    let _ = write!(html, "<svg id=\"{id}\" width=\"{CHART_WIDTH}\" height=\"{height}\" role=\"img\">");
    for (row, (city, segments)) in (0u64..).zip(rows) {
        let y = 8 + row * ROW_HEIGHT;
        let city = escape(city);
        let _ = write!(html, "<text x=\"8\" y=\"{}\" font-size=\"14\">{city}</text>", y + 18);
        let mut x = LABEL_WIDTH;
        let mut total = 0;
        for (key, color, value) in segments {
            let width = value * plot / max;
            total += value;
            let _ = write!(
                html,
                "<rect class=\"bar\" data-city=\"{city}\" data-key=\"{}\" data-value=\"{value}\" x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{BAR_HEIGHT}\" fill=\"{color}\"><title>{city} {}: {}</title></rect>",
                escape(key),
                escape(key),
                unit(*value)
            );
            x += width;
        }
        let _ = write!(html, "<text x=\"{}\" y=\"{}\" font-size=\"13\" fill=\"#595959\">{}</text>", x + 6, y + 18, unit(total));
    }
    html.push_str("</svg>");
}

fn method_chart(html: &mut String, totals: &[CityStats]) {
    let rows: Vec<BarRow> = totals
        .iter()
        .map(|city| {
            let methods = city.by_method();
            let segments = METHOD_COLORS
                .iter()
                .filter_map(|(method, color, _)| methods.get(*method).map(|c| ((*method).to_owned(), *color, c.count)))
                .collect();
            (city.city.clone(), segments)
        })
        .collect();
    stacked_bars(html, "chart-methods", &rows, &thousands);
}

fn category_chart(html: &mut String, totals: &[CityStats]) {
    let rows: Vec<BarRow> = totals
        .iter()
        .map(|city| {
            let segments = city
                .by_category()
                .into_iter()
                .map(|(category, c)| {
                    let color = category_color(&category);
                    (category, color, u64::try_from(c.amount).unwrap_or(0))
                })
                .collect();
            (city.city.clone(), segments)
        })
        .collect();
    stacked_bars(html, "chart-categories", &rows, &|fen| yuan(i64::try_from(fen).unwrap_or(i64::MAX)));
}

fn city_table(html: &mut String, totals: &[CityStats]) {
    html.push_str(
        "<table id=\"cities\"><tr><th class=\"name\">city</th><th>payments</th><th>volume (yuan)</th><th>by phone</th><th>cash</th>\
         <th>refunds</th><th>real-name residents</th><th>class I / II / III</th><th>active payers</th><th>transit trips</th>\
         <th>bills paid</th><th>settled (yuan)</th><th>merchants</th><th>paid by phone</th><th>took cash</th></tr>",
    );
    for city in totals {
        let name = escape(&city.city);
        let total = city.total();
        let mobile = city.mobile();
        let class = |c: &str| thousands(city.residents_by_class.get(c).copied().unwrap_or(0));
        let _ = write!(
            html,
            "<tr data-city=\"{name}\"><td class=\"name\">{name}</td><td data-metric=\"payments\" data-value=\"{}\">{}</td>\
             <td data-metric=\"volume\" data-value=\"{}\">{}</td><td data-metric=\"mobile\" data-value=\"{}\">{}</td><td>{}</td>\
             <td>{} ({})</td><td data-metric=\"real_name_residents\" data-value=\"{}\">{}</td><td>{} / {} / {}</td><td>{}</td>\
             <td data-metric=\"transit_trips\" data-value=\"{}\">{}</td><td data-metric=\"bills_paid\" data-value=\"{}\">{}</td>\
             <td data-metric=\"settled\" data-value=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            total.count,
            thousands(total.count),
            total.amount,
            yuan(total.amount),
            mobile.count,
            thousands(mobile.count),
            thousands(total.count - mobile.count),
            thousands(city.refunds.count),
            yuan(city.refunds.amount),
            city.real_name_residents,
            thousands(city.real_name_residents),
            class("I"),
            class("II"),
            class("III"),
            thousands(city.active_payers),
            city.transit_trips,
            thousands(city.transit_trips),
            city.bills_paid.count,
            thousands(city.bills_paid.count),
            city.settled.amount,
            yuan(city.settled.amount),
            thousands(city.merchants),
            thousands(city.merchants_paid_by_phone),
            thousands(city.merchants_taking_cash),
        );
    }
    html.push_str("</table>");
}

fn day_table(html: &mut String, report: &Report) {
    html.push_str("<table id=\"days\"><tr><th class=\"name\">date</th><th class=\"name\">city</th><th>payments</th><th>volume (yuan)</th><th>cashless (count)</th><th>cashless (value)</th><th>active payers</th></tr>");
    for day in &report.days {
        for city in &day.cities {
            let total = city.total();
            let _ = write!(
                html,
                "<tr><td class=\"name\">{}</td><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&day.date),
                escape(&city.city),
                thousands(total.count),
                yuan(total.amount),
                percent(city.cashless_share_by_count_bp()),
                percent(city.cashless_share_by_value_bp()),
                thousands(city.active_payers),
            );
        }
    }
    html.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn city(code: u32, name: &str, qr: u64, cash: u64) -> CityStats {
        let mut stats = CityStats { city_code: code, city: name.into(), real_name_residents: 10, ..CityStats::default() };
        let retail = stats.payments.entry("retail".into()).or_default();
        retail.insert("qr".into(), Counter { count: qr, amount: i64::try_from(qr).unwrap() * 1_000 });
        retail.insert("cash".into(), Counter { count: cash, amount: i64::try_from(cash).unwrap() * 500 });
        stats
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(yuan(123_456), "1,234.56");
        assert_eq!(yuan(-5), "-0.05");
        assert_eq!(percent(9_345), "93.4%");
        assert_eq!(escape("<a href='x'>&</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn ranking_divides_by_residents_and_totals_add_days() {
        let report = Report {
            days: vec![
                ReportDay { date: "2017-08-01".into(), cities: vec![city(1, "A", 10, 10), city(2, "B", 30, 0)] },
                ReportDay { date: "2017-08-02".into(), cities: vec![city(1, "A", 10, 0), city(2, "B", 0, 0)] },
            ],
            residents: [("B".to_owned(), 100)].into_iter().collect(),
            ..Report::default()
        };
        let totals = report.totals();
        assert_eq!(totals[0].total(), Counter { count: 30, amount: 25_000 });
        assert_eq!(totals[0].cashless_share_by_count_bp(), 6_666);
        assert_eq!(totals[0].cashless_share_by_value_bp(), 8_000);
        let ranking = report.ranking();
        // A: 20 mobile payments / 10 real-name residents; B: 30 / 100 simulated residents.
        assert_eq!((ranking[0].city.as_str(), ranking[0].mobile_payments_per_resident_milli), ("A", 2_000));
        assert_eq!((ranking[1].city.as_str(), ranking[1].mobile_payments_per_resident_milli), ("B", 300));
    }

    #[test]
    fn the_page_escapes_names_and_embeds_the_data() {
        let report = Report {
            title: "T".into(),
            days: vec![ReportDay { date: "d".into(), cities: vec![city(1, "<script>", 1, 1)] }],
            ..Report::default()
        };
        let html = render(&report);
        let (page, _) = html.split_once("id=\"report-data\"").unwrap();
        assert!(!page.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("id=\"report-data\""));
        assert!(html.contains("data-metric=\"payments\" data-value=\"2\""));
    }
}
