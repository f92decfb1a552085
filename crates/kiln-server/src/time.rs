//! Times in queries, as Pyroscope and Grafana write them: `now`,
//! `now-1h`, `now-30m`, Unix seconds or Unix milliseconds. Anything else
//! (an RFC 3339 date, say) is refused with a message rather than guessed.

/// A span written `<number><unit>` (`ms`, `s`, `m`, `h`, `d`, `w`), in ms.
fn span_ms(rest: &str) -> Result<i64, String> {
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("expected a unit after the number (s, m, h, d)")?;
    let n: i64 = rest[..split]
        .parse()
        .map_err(|_| "expected <number><unit>")?;
    let unit = match &rest[split..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => {
            return Err(format!(
                "unknown unit {other:?}: expected ms, s, m, h, d or w"
            ));
        }
    };
    n.checked_mul(unit).ok_or_else(|| "too long".to_string())
}

/// A duration written `30s`, `10m`, `7d`, … (as in `now-7d`).
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    span_ms(s.trim()).map(|ms| std::time::Duration::from_millis(ms as u64))
}

/// Milliseconds since the epoch of `s`, relative to `now_ms`.
pub fn parse(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(rest) = s.strip_prefix("now-") {
        return span_ms(rest)
            .map_err(|e| format!("{e}, e.g. now-1h"))
            .map(|d| now_ms.saturating_sub(d));
    }
    let n: i64 = s
        .parse()
        .map_err(|_| "expected now, now-1h, or Unix seconds or milliseconds".to_string())?;
    // Seconds until the year 5138; milliseconds after. Before 1970 or
    // after 9999 is a mistake, not a time.
    let ms = if n.unsigned_abs() < 100_000_000_000 {
        n * 1000
    } else {
        n
    };
    if !(0..=MAX_MS).contains(&ms) {
        return Err(format!("{s} is before 1970 or after 9999"));
    }
    Ok(ms)
}

/// 9999-12-31T23:59:59.999Z in Unix milliseconds.
const MAX_MS: i64 = 253_402_300_799_999;

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn forms() {
        let now = 1_800_000_000_000;
        assert_eq!(parse("now", now), Ok(now));
        assert_eq!(parse("now-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse("now-15m", now), Ok(now - 900_000));
        assert_eq!(parse("1700000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse("1700000000123", now), Ok(1_700_000_000_123));
        assert!(parse("now-1y", now).is_err());
        assert!(parse("yesterday", now).is_err());
        assert!(parse("now-h", now).is_err());
        assert!(parse("-9223372036854775808", now).is_err());
        assert!(parse("9223372036854775807", now).is_err());
        assert!(parse("-5", now).is_err());
    }
}
