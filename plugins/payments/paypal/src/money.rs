//! Amounts between berth and PayPal: berth counts integer minor units of ISO 4217 (2 digits for
//! EUR, 0 for JPY, 3 for KWD); PayPal takes a decimal string with the digits *it* allows for the
//! currency. The two disagree for HUF and TWD: ISO gives them two decimals, PayPal takes whole
//! units only, so `150000` minor units of HUF are `"1500"` and `150050` cannot be sent.

/// ISO 4217 currencies without minor units.
const ISO_NO_DIGITS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
    "XPF",
];
/// ISO 4217 currencies with three decimals.
const ISO_THREE_DIGITS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
/// Currencies PayPal takes in whole units although ISO 4217 gives them decimals
/// (PayPal's currency-codes reference: "This currency does not support decimals").
const PAYPAL_WHOLE_UNITS: &[&str] = &["HUF", "TWD"];

/// Whether `currency` looks like an ISO 4217 code (three upper-case letters).
pub fn is_currency_code(currency: &str) -> bool {
    currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())
}

/// Digits of berth's minor units for `currency` (ISO 4217).
pub fn iso_digits(currency: &str) -> u32 {
    if ISO_NO_DIGITS.contains(&currency) {
        0
    } else if ISO_THREE_DIGITS.contains(&currency) {
        3
    } else {
        2
    }
}

/// Decimals PayPal accepts for `currency`.
pub fn paypal_digits(currency: &str) -> u32 {
    if PAYPAL_WHOLE_UNITS.contains(&currency) { 0 } else { iso_digits(currency) }
}

/// The PayPal `value` for `amount_minor` minor units of `currency`: `1250` EUR is `"12.50"`,
/// `1500` JPY is `"1500"`, `150000` HUF is `"1500"`.
pub fn to_paypal_value(amount_minor: i64, currency: &str) -> Result<String, String> {
    if !is_currency_code(currency) {
        return Err(format!("'{currency}' is not an ISO 4217 currency code"));
    }
    if amount_minor < 0 {
        return Err(format!("amount {amount_minor} is negative"));
    }
    let dropped = 10_i64.pow(iso_digits(currency) - paypal_digits(currency));
    if amount_minor % dropped != 0 {
        return Err(format!(
            "PayPal takes {currency} in whole units only; {amount_minor} minor units is not a whole amount"
        ));
    }
    let units = amount_minor / dropped;
    let digits = paypal_digits(currency);
    if digits == 0 {
        return Ok(units.to_string());
    }
    let scale = 10_i64.pow(digits);
    Ok(format!("{}.{:0width$}", units / scale, units % scale, width = digits as usize))
}

/// berth's minor units for a PayPal `value` of `currency`: `"12.50"` EUR is `1250`, `"1500"`
/// HUF is `150000`. Trailing zeros beyond the currency's digits are accepted (`"12.500"`).
pub fn from_paypal_value(value: &str, currency: &str) -> Result<i64, String> {
    let invalid = || format!("'{value}' is not a {currency} amount");
    if !is_currency_code(currency) {
        return Err(format!("'{currency}' is not an ISO 4217 currency code"));
    }
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || (value.contains('.') && fraction.is_empty()) {
        return Err(invalid());
    }
    let digits = iso_digits(currency) as usize;
    let (kept, extra) = fraction.split_at(fraction.len().min(digits));
    if extra.bytes().any(|b| b != b'0') {
        return Err(format!("'{value}' has more decimals than {currency} allows"));
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let kept_value: i64 = if kept.is_empty() { 0 } else { kept.parse().map_err(|_| invalid())? };
    let kept_value = kept_value * 10_i64.pow((digits - kept.len()) as u32);
    whole.checked_mul(10_i64.pow(digits as u32)).and_then(|minor| minor.checked_add(kept_value)).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_become_paypal_values() {
        for (minor, currency, value) in [
            (1250, "EUR", "12.50"),
            (5, "USD", "0.05"),
            (0, "EUR", "0.00"),
            (100_000, "GBP", "1000.00"),
            (1500, "JPY", "1500"),
            (1500, "KRW", "1500"),
            (150_000, "HUF", "1500"),
            (99_900, "TWD", "999"),
            (1234, "KWD", "1.234"),
        ] {
            assert_eq!(to_paypal_value(minor, currency).as_deref(), Ok(value), "{minor} {currency}");
            assert_eq!(from_paypal_value(value, currency), Ok(minor), "{value} {currency}");
        }
    }

    #[test]
    fn impossible_amounts_are_refused() {
        assert_eq!(
            to_paypal_value(150_050, "HUF").unwrap_err(),
            "PayPal takes HUF in whole units only; 150050 minor units is not a whole amount"
        );
        assert!(to_paypal_value(-1, "EUR").is_err());
        assert!(to_paypal_value(100, "eur").is_err());
        assert!(to_paypal_value(100, "EURO").is_err());
    }

    #[test]
    fn paypal_values_are_parsed_strictly() {
        assert_eq!(from_paypal_value("30.0", "USD"), Ok(3000));
        assert_eq!(from_paypal_value("30", "USD"), Ok(3000));
        assert_eq!(from_paypal_value("12.500", "EUR"), Ok(1250));
        for bad in ["", ".5", "5.", "1,00", "-1.00", "1.001", "abc", "1e3", "99999999999999999999"] {
            assert!(from_paypal_value(bad, "EUR").is_err(), "{bad:?}");
        }
        assert!(from_paypal_value("1.5", "JPY").is_err());
    }
}
