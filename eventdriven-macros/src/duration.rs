//! Duration strings in attributes (`ttl = "30s"`, `backoff = "100ms..10s"`), checked at
//! compile time; the runtime's `delivery::parse_duration` reads the same text.

/// `"150ms"`, `"30s"`, `"5m"`, `"1h"` in milliseconds.
pub(crate) fn parse_millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write `100ms`, `30s`, `5m` or `1h`"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`: use `ms`, `s`, `m` or `h`"
            ))
        }
    };
    Ok(n * factor)
}
