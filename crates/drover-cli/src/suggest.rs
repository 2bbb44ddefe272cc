//! "Did you mean": the closest valid name to a misspelt key of a job file or of the server's
//! config file, so that the message names the one key to write instead of making the reader
//! scan every valid name.
//!
//! It owns the closeness rule and the rewording of serde's "unknown field" message. It must not
//! decide whether a key is valid: the deserializers (and their `deny_unknown_fields`) do that;
//! this only words their refusal.

/// How similar (Jaro-Winkler, 0 to 1) a valid name must be to the written one to be suggested.
/// 0.8 catches a dropped, doubled or swapped letter and a wrong separator (`max_attempt`,
/// `prority`, `spot_timeout`) without suggesting something unrelated for a made-up key.
const CLOSE_ENOUGH: f64 = 0.8;

/// The valid name closest to `written`, if one is close enough to be what was meant. Case and
/// the separators `-` and `_` count for little: `maxAttempts`, `max-attempts` and
/// `max_attempts` are the same word to a reader.
pub fn closest<'a>(written: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let target = squash(written);
    // Between spellings of one word (`max_attempts` and its alias `maxAttempts`), the one
    // written most like the user's wins: snake_case for a TOML file, camelCase for JSON.
    let score = |name: &str| {
        (
            strsim::jaro_winkler(&target, &squash(name)),
            strsim::jaro_winkler(written, name),
        )
    };
    valid
        .into_iter()
        .map(|name| (score(name), name))
        .filter(|((word, _), _)| *word >= CLOSE_ENOUGH)
        // The first of equally close names wins, so the answer does not depend on float ties.
        .fold(
            None,
            |best: Option<((f64, f64), &str)>, (s, name)| match best {
                Some((b, _)) if b >= s => best,
                _ => Some((s, name)),
            },
        )
        .map(|(_, name)| name)
}

/// Rewords serde's refusal of an unknown key, "unknown field `x`, expected one of `a`, `b`",
/// wherever it appears in `message` (a TOML error carries it after the line it points at), so
/// that the closest valid key comes first and the list after it. A message without that
/// refusal, or whose key is like none of the valid ones, is returned unchanged.
pub fn unknown_field(message: &str) -> String {
    const UNKNOWN: &str = "unknown field `";
    const EXPECTED: &str = ", expected ";
    let Some(start) = message.find(UNKNOWN) else {
        return message.to_string();
    };
    let after = &message[start + UNKNOWN.len()..];
    let Some(end) = after.find('`') else {
        return message.to_string();
    };
    let written = &after[..end];
    let Some(rest) = after[end + 1..].strip_prefix(EXPECTED) else {
        return message.to_string();
    };
    // serde lists the names in backquotes: "one of `a`, `b`" or "`a`"; the list ends the line,
    // or the position serde_json adds after it.
    let list_end = [rest.find('\n'), rest.find(" at line ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    let list = &rest[..list_end];
    let valid = list.split('`').skip(1).step_by(2);
    match closest(written, valid) {
        Some(name) => format!(
            "{}unknown field `{written}`: did you mean `{name}`? (expected {list}){}",
            &message[..start],
            &rest[list_end..]
        ),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB_KEYS: [&str; 6] = [
        "name",
        "command",
        "priority",
        "max_attempts",
        "task_timeout",
        "shared",
    ];

    #[test]
    fn a_misspelt_key_finds_what_was_meant() {
        assert_eq!(closest("prority", JOB_KEYS), Some("priority"));
        assert_eq!(closest("max_attempt", JOB_KEYS), Some("max_attempts"));
        assert_eq!(closest("maxAttempts", JOB_KEYS), Some("max_attempts"));
        let both = ["maxAttempts", "max_attempts"];
        assert_eq!(closest("max_attempt", both), Some("max_attempts"));
        assert_eq!(closest("maxAttempt", both), Some("maxAttempts"));
        assert_eq!(closest("sharred", JOB_KEYS), Some("shared"));
        assert_eq!(closest("task-timeout", JOB_KEYS), Some("task_timeout"));
        assert_eq!(
            closest("spot_timeout", ["port", "spot-timeout", "task-timeout"]),
            Some("spot-timeout")
        );
    }

    #[test]
    fn a_key_like_none_suggests_nothing() {
        assert_eq!(closest("zebra", JOB_KEYS), None);
        assert_eq!(closest("x", JOB_KEYS), None);
        assert_eq!(closest("anything", []), None);
    }

    #[test]
    fn serde_s_refusal_puts_the_suggestion_before_the_list() {
        let serde = "TOML parse error at line 2, column 1\n  |\n2 | prority = 1\n  | ^^^^^^^\n\
                     unknown field `prority`, expected one of `name`, `priority`, `command`\n";
        let worded = unknown_field(serde);
        assert!(
            worded.starts_with("TOML parse error at line 2, column 1\n"),
            "{worded}"
        );
        assert!(
            worded.contains(
                "unknown field `prority`: did you mean `priority`? \
                 (expected one of `name`, `priority`, `command`)\n"
            ),
            "{worded}"
        );
        // Nothing close: serde's own words stay.
        let far = "unknown field `zebra`, expected one of `name`, `priority`";
        assert_eq!(unknown_field(far), far);
        let json =
            "unknown field `maxAttempt`, expected one of `name`, `maxAttempts` at line 2 column 15";
        assert_eq!(
            unknown_field(json),
            "unknown field `maxAttempt`: did you mean `maxAttempts`? \
             (expected one of `name`, `maxAttempts`) at line 2 column 15"
        );
        let other = "invalid type: integer `1`, expected a string";
        assert_eq!(unknown_field(other), other);
    }
}
