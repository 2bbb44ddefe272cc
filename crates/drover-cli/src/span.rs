//! [`Span`], a duration as people write it on a command line, in a variable or in a config file.
//! It only parses; what a duration may be (zero, at most a year) is decided where it is used.

use serde::Deserialize;
use std::time::Duration;

/// A duration given as `30s`, `5m`, `250ms`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::str::FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return Duration::try_from_secs_f64(secs)
                .map(Span)
                .map_err(|e| format!("{s:?}: {e}"));
        }
        humantime::parse_duration(s)
            .map(Span)
            .map_err(|e| format!("{s:?} is not a duration such as 30s, 5m or 250ms: {e}"))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Duration::try_from_secs_f64(s)
                .map(Span)
                .map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!("30s".parse::<Span>().unwrap().0, Duration::from_secs(30));
        assert_eq!("5m".parse::<Span>().unwrap().0, Duration::from_secs(300));
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "1.5".parse::<Span>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert!("soon".parse::<Span>().is_err());
    }
}
