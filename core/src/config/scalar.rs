//! How k0s reads a plain (unquoted) YAML scalar.
//!
//! k0s parses its configuration with sigs.k8s.io/yaml on top of go-yaml v2, which follows
//! YAML 1.1: `yes`/`on` are booleans, `0123` is octal, `1e3` a float. A plain scalar bound
//! for a string field is then turned back into text (`0123` becomes "83"). We read files the
//! way k0s does, so a config means the same thing to both, and warn where that differs from
//! what the text seems to say.

/// What a plain scalar resolves to under YAML 1.1 (go-yaml v2).
#[derive(Debug, Clone, PartialEq)]
pub enum Plain {
    /// `~`, `null`, or nothing.
    Null,
    /// `true`, `yes`, `on`, ...
    Bool(bool),
    /// Decimal, octal (leading 0), hex, binary.
    Int(i128),
    /// Anything with a dot or an exponent.
    Float(f64),
    /// Text.
    Str,
}

/// What a plain scalar means to k0s (YAML 1.1).
pub fn resolve(raw: &str) -> Plain {
    match raw {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Plain::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Plain::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = int(raw) {
        return Plain::Int(i);
    }
    if let Some(f) = float(raw) {
        return Plain::Float(f);
    }
    Plain::Str
}

/// The number a plain scalar reads as under YAML 1.1, fractions allowed: an integer, or a
/// finite float.
pub fn number(raw: &str) -> Option<f64> {
    match resolve(raw) {
        Plain::Int(i) => Some(i as f64),
        Plain::Float(f) if f.is_finite() => Some(f),
        _ => None,
    }
}

/// YAML 1.1 integers: decimal, `0x` hex, `0b` binary, and a leading 0 for octal;
/// underscores are separators.
fn int(raw: &str) -> Option<i128> {
    let (negative, body) = match raw.as_bytes().first()? {
        b'-' => (true, raw.get(1..)?),
        b'+' => (false, raw.get(1..)?),
        _ => (false, raw),
    };
    let digits: String = body.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || body.starts_with('_') {
        return None;
    }
    let value = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o").or_else(|| digits.strip_prefix("0O")) {
        i128::from_str_radix(oct, 8).ok()?
    } else if let Some(bin) = digits.strip_prefix("0b").or_else(|| digits.strip_prefix("0B")) {
        i128::from_str_radix(bin, 2).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i128::from_str_radix(digits.get(1..)?, 8).ok()?
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

/// YAML 1.1 floats: digits with a dot and an optional exponent (`1.5`, `1e3` is not one in
/// the spec, but go-yaml accepts it through strconv).
fn float(raw: &str) -> Option<f64> {
    let clean: String = raw.chars().filter(|c| *c != '_').collect();
    let looks_numeric = clean.bytes().any(|b| b.is_ascii_digit())
        && clean
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !looks_numeric {
        return None;
    }
    clean.parse().ok()
}

/// The text k0s ends up with when a plain scalar fills a string field (Go's formatting).
pub fn as_go_string(raw: &str) -> String {
    match resolve(raw) {
        Plain::Null => String::new(),
        Plain::Bool(b) => b.to_string(),
        Plain::Int(i) => i.to_string(),
        Plain::Float(f) if f.is_nan() => "NaN".into(),
        Plain::Float(f) if f.is_infinite() => {
            if f > 0.0 {
                "+Inf".into()
            } else {
                "-Inf".into()
            }
        }
        Plain::Float(f) => format!("{f}"),
        Plain::Str => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_resolution_as_go_yaml_v2() {
        assert_eq!(resolve("yes"), Plain::Bool(true));
        assert_eq!(resolve("Off"), Plain::Bool(false));
        assert_eq!(resolve("0123"), Plain::Int(83));
        assert_eq!(resolve("0x1F"), Plain::Int(31));
        assert_eq!(resolve("1_000"), Plain::Int(1000));
        assert_eq!(resolve("-7"), Plain::Int(-7));
        assert_eq!(resolve("1.5"), Plain::Float(1.5));
        assert_eq!(resolve("~"), Plain::Null);
        assert_eq!(resolve("k0s-lab1"), Plain::Str);
        assert_eq!(resolve("192.168.1.1"), Plain::Str);
        assert_eq!(resolve("08"), Plain::Float(8.0), "not octal, so go-yaml v2 reads a float");
    }

    #[test]
    fn go_string_forms() {
        assert_eq!(as_go_string("0123"), "83");
        assert_eq!(as_go_string("yes"), "true");
        assert_eq!(as_go_string("1e3"), "1000");
        assert_eq!(as_go_string("123456"), "123456");
        assert_eq!(as_go_string("secret"), "secret");
    }
}
