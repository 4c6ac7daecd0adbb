//! MQTT topic filters (`+`, `#`, and shared subscriptions `$share/{group}/...`).

/// Whether `topic` matches the subscription `filter`.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = strip_share(filter);
    // Topics starting with `$` are the broker's own and match no wildcard at the first level.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for wanted in filter.split('/') {
        match wanted {
            "#" => return true,
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

/// The filter of a shared subscription without its `$share/{group}/` prefix.
pub(crate) fn strip_share(filter: &str) -> &str {
    filter.strip_prefix("$share/").and_then(|rest| rest.split_once('/')).map_or(filter, |(_group, filter)| filter)
}

/// Checks a filter's syntax: `#` only last, wildcards only as whole levels.
pub(crate) fn validate_filter(filter: &str) -> Result<(), String> {
    let inner = strip_share(filter);
    if inner.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = inner.split('/').collect();
    for (index, level) in levels.iter().enumerate() {
        if *level == "#" && index != levels.len() - 1 {
            return Err(format!("'{filter}': '#' must be the last level"));
        }
        if level.len() > 1 && (level.contains('#') || level.contains('+')) {
            return Err(format!("'{filter}': wildcards must fill a whole level"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(filter_matches("berth/v1/+/uplink/+", "berth/v1/acme/uplink/0004A30B001C0530"));
        assert!(!filter_matches("berth/v1/+/uplink/+", "berth/v1/acme/uplink"));
        assert!(!filter_matches("berth/v1/+/uplink/+", "berth/v1/acme/uplink/a/b"));
        assert!(filter_matches("v3/+/devices/+/up", "v3/app@ttn/devices/eui-1/up"));
        assert!(filter_matches("application/#", "application/1/device/abc/event/up"));
        assert!(filter_matches("#", "a/b"));
        assert!(!filter_matches("#", "$SYS/broker"));
        assert!(filter_matches("$share/berth/v3/+/devices/+/up", "v3/app/devices/d/up"));
    }

    #[test]
    fn filter_syntax() {
        assert!(validate_filter("a/#").is_ok());
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a/b+").is_err());
        assert!(validate_filter("").is_err());
    }
}
