//! The rate card: what Meta charges per billable message, by pricing category and the
//! recipient's country, from a CSV file the operator keeps up to date (Meta changes its
//! rates several times a year). Costs are worked out at query time, so a corrected card
//! reprices all history at once.
//!
//! Prices are kept in millionths of the currency unit, so that sums are exact; answers
//! round to 4 decimals.

use jiff::civil::Date;

/// Prices carry at most this many decimals.
const MICROS: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub category: String,
    /// ISO 3166 alpha-2, or `*` for every country without a price of its own.
    pub country: String,
    pub price_micros: i64,
    /// The first day (the 1st of a month) the price applies; `None` since always.
    pub effective_from: Option<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCard {
    pub currency: String,
    pub rates: Vec<Rate>,
}

impl Default for RateCard {
    fn default() -> Self {
        RateCard {
            currency: "USD".into(),
            rates: Vec::new(),
        }
    }
}

impl RateCard {
    /// Reads a card: a header `category,country,price` with an optional `effective_from`
    /// column, then one price per line. Every line is checked; the error names the first
    /// bad one and what is allowed.
    pub fn parse(text: &str, currency: &str) -> Result<RateCard, String> {
        let ok_currency = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
        if !ok_currency {
            return Err(format!(
                "currency `{currency}`; allowed: an ISO 4217 code of three capital letters, e.g. USD"
            ));
        }
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((_, header)) = lines.next() else {
            return Err(
                "the rate card is empty; it needs the header category,country,price".into(),
            );
        };
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(cat), Some(country), Some(price)) =
            (find("category"), find("country"), find("price"))
        else {
            return Err(format!(
                "rate card header `{header}`; allowed: category,country,price with an optional effective_from column"
            ));
        };
        if let Some(other) = columns
            .iter()
            .find(|c| !["category", "country", "price", "effective_from"].contains(c))
        {
            return Err(format!(
                "rate card header names `{other}`; allowed columns: category, country, price, effective_from"
            ));
        }
        let from = find("effective_from");
        let mut rates = Vec::new();
        for (n, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != columns.len() {
                return Err(format!(
                    "rate card line {n} has {} fields; the header has {}",
                    cells.len(),
                    columns.len()
                ));
            }
            let category = cells[cat].to_ascii_lowercase();
            if category.is_empty()
                || !category
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                return Err(format!(
                    "rate card line {n}: category `{}`; allowed: a pricing category such as marketing, utility, authentication or service",
                    cells[cat]
                ));
            }
            let place = cells[country].to_ascii_uppercase();
            let ok_place =
                place == "*" || (place.len() == 2 && place.bytes().all(|b| b.is_ascii_uppercase()));
            if !ok_place {
                return Err(format!(
                    "rate card line {n}: country `{}`; allowed: an ISO 3166 alpha-2 code (DE) or * for the default",
                    cells[country]
                ));
            }
            let price_micros = parse_price(cells[price]).ok_or_else(|| {
                format!(
                    "rate card line {n}: price `{}`; allowed: a number of 0 or more with at most 6 decimals",
                    cells[price]
                )
            })?;
            let effective_from = match from.map(|i| cells[i]) {
                None | Some("") => None,
                Some(d) => {
                    let date: Date = d.parse().map_err(|_| {
                        format!(
                            "rate card line {n}: effective_from `{d}`; allowed: a date YYYY-MM-DD"
                        )
                    })?;
                    // Monthly figures are the finest kept forever: a price changing within
                    // a month could not be applied to them exactly.
                    if date.day() != 1 {
                        return Err(format!(
                            "rate card line {n}: effective_from `{d}`; allowed: the first day of a month (prices change for whole months)"
                        ));
                    }
                    Some(date)
                }
            };
            rates.push(Rate {
                category,
                country: place,
                price_micros,
                effective_from,
            });
        }
        Ok(RateCard {
            currency: currency.to_string(),
            rates,
        })
    }

    /// The dates prices change on, in order.
    pub fn changes(&self) -> Vec<Date> {
        let mut d: Vec<Date> = self.rates.iter().filter_map(|r| r.effective_from).collect();
        d.sort();
        d.dedup();
        d
    }

    /// The price of one billable message of `category` to `country` sent on `day`: the
    /// country's own price if it has one, else the `*` price; the latest in effect.
    pub fn price_micros(&self, category: &str, country: &str, day: Date) -> Option<i64> {
        let best = |place: &str| {
            self.rates
                .iter()
                .filter(|r| r.category == category && r.country == place)
                .filter(|r| r.effective_from.is_none_or(|f| f <= day))
                .max_by_key(|r| r.effective_from)
                .map(|r| r.price_micros)
        };
        best(country).or_else(|| best("*"))
    }
}

fn parse_price(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 6 {
        return None;
    }
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: i64 = format!("{frac:0<6}").parse().ok()?;
    whole.checked_mul(MICROS)?.checked_add(frac)
}

/// Millionths of a unit as a number rounded to 4 decimals.
pub fn money(micros: i64) -> f64 {
    (micros as f64 / 100.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    const CARD: &str = "category,country,price,effective_from\n\
        marketing,*,0.0250,\n\
        marketing,DE,0.1365,\n\
        marketing,DE,0.1400,2025-07-01\n\
        utility,*,0.004,\n";

    #[test]
    fn the_country_price_beats_the_default_and_the_latest_in_effect_wins() {
        let c = RateCard::parse(CARD, "EUR").expect("valid card");
        assert_eq!(c.currency, "EUR");
        assert_eq!(
            c.price_micros("marketing", "DE", date(2025, 6, 30)),
            Some(136_500)
        );
        assert_eq!(
            c.price_micros("marketing", "DE", date(2025, 7, 1)),
            Some(140_000)
        );
        assert_eq!(
            c.price_micros("marketing", "IN", date(2025, 7, 1)),
            Some(25_000)
        );
        assert_eq!(
            c.price_micros("utility", "unknown", date(2025, 7, 1)),
            Some(4_000)
        );
        assert_eq!(
            c.price_micros("authentication", "DE", date(2025, 7, 1)),
            None
        );
        assert_eq!(c.changes(), vec![date(2025, 7, 1)]);
        assert_eq!(money(136_500 * 3), 0.4095);
    }

    #[test]
    fn bad_cards_name_the_line_and_what_is_allowed() {
        let bad = |text: &str| RateCard::parse(text, "USD").expect_err("refused");
        assert!(bad("").contains("empty"));
        assert!(bad("cat,country,price\n").contains("header"));
        assert!(bad("category,country,price\nmarketing,Germany,0.1\n").contains("line 2: country"));
        assert!(bad("category,country,price\nmarketing,DE,-1\n").contains("line 2: price"));
        assert!(bad("category,country,price\nmarketing,DE,0.1234567\n").contains("6 decimals"));
        assert!(
            bad("category,country,price,effective_from\nmarketing,DE,0.1,2025-07-15\n")
                .contains("first day of a month")
        );
        assert!(RateCard::parse(CARD, "usd").is_err());
    }
}
