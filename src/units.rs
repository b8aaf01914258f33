//! Human-friendly sizes (`64KiB`, `1MiB`) and durations (`500ms`, `10s`) on the
//! command line.

use std::time::Duration;

/// Parse a byte count: a number with an optional B, KiB, MiB or GiB suffix
/// (K, M, G and KB, MB, GB are read as the binary units too).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 65536, 64KiB or 1MiB)"))?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB or GiB)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parse a count of things: a number with an optional k (thousand) or m
/// (million) suffix, e.g. `10k`, `2.5m`, `250000`.
pub fn parse_count(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        other => {
            return Err(format!(
                "unknown count suffix `{other}` (use k or m: 10k, 1m)"
            ))
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a count (try 10000, 10k or 1m)"))?;
    let count = number * multiplier;
    if !(count >= 1.0 && count.fract() == 0.0 && count < 1e12) {
        return Err(format!("`{text}` is not a whole count of at least 1"));
    }
    Ok(count as usize)
}

/// Parse a duration: a number with a unit of ms, s or m.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 10s or 2m)"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "" => Err(format!("`{text}` needs a unit: ms, s or m")),
        other => Err(format!("unknown duration unit `{other}` (use ms, s or m)")),
    }
}

/// `"64KiB"` → `("64", "KiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(split)
}

/// A number with thousands separators and `decimals` decimals.
pub fn grouped(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(parse_count("10k"), Ok(10_000));
        assert_eq!(parse_count("2.5m"), Ok(2_500_000));
        assert_eq!(parse_count("250000"), Ok(250_000));
        assert_eq!(parse_count("1M"), Ok(1_000_000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("10x").is_err());
        assert!(parse_count("k").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2 M"), Ok(2 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1h").is_err());
    }
}
