//! Titles of the error codes the WhatsApp Cloud API reports with a failed message, after
//! Meta's error-code reference, so that failure reasons read as words on a dashboard.

/// `(code, title)`, sorted by code for the binary search.
const TITLES: &[(i64, &str)] = &[
    (0, "Authentication error"),
    (1, "API unknown: invalid request or possible server error"),
    (2, "API service: temporary downtime or overload"),
    (3, "API method: capability or permissions issue"),
    (4, "Too many calls"),
    (10, "Permission denied"),
    (33, "Parameter value is not valid: phone number deleted"),
    (100, "Invalid parameter"),
    (190, "Access token has expired"),
    (200, "Permission error"),
    (368, "Temporarily blocked for policies violations"),
    (80007, "Rate limit issues"),
    (130429, "Rate limit hit"),
    (130472, "User's number is part of an experiment"),
    (
        130497,
        "Business account is restricted from messaging users in this country",
    ),
    (131000, "Something went wrong"),
    (131005, "Access denied"),
    (131008, "Required parameter is missing"),
    (131009, "Parameter value is not valid"),
    (131016, "Service unavailable"),
    (131021, "Recipient cannot be sender"),
    (131026, "Message undeliverable"),
    (131031, "Account has been locked"),
    (131037, "Display name approval needed"),
    (131042, "Business eligibility payment issue"),
    (131045, "Incorrect certificate"),
    (131047, "Re-engagement message"),
    (131048, "Spam rate limit hit"),
    (131049, "Meta chose not to deliver"),
    (131050, "User stopped marketing messages"),
    (131051, "Unsupported message type"),
    (131052, "Media download error"),
    (131053, "Media upload error"),
    (131056, "Pair rate limit hit"),
    (131057, "Account in maintenance mode"),
    (132000, "Template parameter count mismatch"),
    (132001, "Template does not exist"),
    (132005, "Template hydrated text too long"),
    (132007, "Template format character policy violated"),
    (132012, "Template parameter format mismatch"),
    (132015, "Template is paused"),
    (132016, "Template is disabled"),
    (132068, "Flow is blocked"),
    (132069, "Flow is throttled"),
    (133000, "Incomplete deregistration"),
    (133004, "Server temporarily unavailable"),
    (133005, "Two-step verification PIN mismatch"),
    (133006, "Phone number re-verification needed"),
    (133008, "Too many two-step verification PIN guesses"),
    (133009, "Two-step verification PIN guessed too fast"),
    (133010, "Phone number not registered"),
    (133015, "Wait before registering this phone number again"),
    (133016, "Account register or deregister rate limit exceeded"),
    (135000, "Generic user error"),
];

/// The title of a failure's error code as stored (`""` when the failure had none).
pub fn title(code: &str) -> &'static str {
    if code.is_empty() {
        return "No error code given";
    }
    code.parse::<i64>()
        .ok()
        .and_then(|c| TITLES.binary_search_by_key(&c, |(k, _)| *k).ok())
        .map_or("Unlisted error code", |i| TITLES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_titles_known_codes() {
        assert!(TITLES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(title("131026"), "Message undeliverable");
        assert_eq!(title("368"), "Temporarily blocked for policies violations");
        assert_eq!(title("130472"), "User's number is part of an experiment");
        assert_eq!(title("999999"), "Unlisted error code");
        assert_eq!(title("abc"), "Unlisted error code");
        assert_eq!(title(""), "No error code given");
    }
}
