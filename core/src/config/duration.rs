//! Go's `time.ParseDuration`, which k0s uses for `delayLoop` (`metav1.Duration`).

/// Nanoseconds in each unit Go accepts.
const UNITS: [(&str, u128); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("", 0),
];

/// Parses `"1m"`, `"1.5s"`, `"1h2m3s"`, `"-300ms"`, `"0"` into nanoseconds, with Go's
/// error wording for what it refuses.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let quoted = format!("{text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..).unwrap_or_default()),
        Some(b'+') => (false, text.get(1..).unwrap_or_default()),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {quoted}"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(format!("invalid duration {quoted}"));
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("missing unit in duration {quoted}"));
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit && !u.is_empty()) else {
            return Err(format!("unknown unit {unit:?} in duration {quoted}"));
        };
        let overflow = || format!("invalid duration {quoted}: out of range");
        let whole: u128 =
            if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| overflow())? };
        let mut value = whole.checked_mul(scale).ok_or_else(overflow)?;
        // The fraction, digit by digit, truncated below a nanosecond as Go does.
        let mut place = scale;
        for d in frac_part.bytes() {
            place /= 10;
            value = value.checked_add(u128::from(d - b'0') * place).ok_or_else(overflow)?;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > i64::MAX as u128 {
            return Err(overflow());
        }
        rest = next;
    }
    let total = i128::try_from(total).unwrap_or(i128::MAX);
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        assert_eq!(parse_go_duration("1m"), Ok(60_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("1h2m3s"), Ok(3_723_000_000_000));
        assert_eq!(parse_go_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("1234567ns"), Ok(1_234_567));
        assert_eq!(parse_go_duration("2µs"), Ok(2_000));
    }

    #[test]
    fn refuses_what_go_refuses() {
        assert_eq!(parse_go_duration("60"), Err("missing unit in duration \"60\"".into()));
        assert!(parse_go_duration("1d").expect_err("days").contains("unknown unit \"d\""));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("9999999999h").is_err());
    }
}
