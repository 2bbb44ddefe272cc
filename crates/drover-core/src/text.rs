//! How values and errors read as text, the one way every crate prints them: pure functions,
//! no IO. They decide presentation only, never what a value or an error means.

pub use crate::run::value_text;

/// Characters a URL path segment keeps as they are (RFC 3986's unreserved ones).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `id` as one segment of a URL path, every other byte percent-encoded: an id that holds `/`,
/// `?`, `%` or a space (a node registered over gRPC names itself) still names one segment.
pub fn path_segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

/// An error and its causes on one line, `outer: inner: innermost`. Many libraries' own
/// messages hide the reason ("error sending request" over "connection refused"); a cause whose
/// text is already in the line is said once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_segment_keeps_unreserved_characters_and_encodes_the_rest() {
        assert_eq!(path_segment("spot-01a2_b.c~"), "spot-01a2_b.c~");
        assert_eq!(path_segment("rack 7/node?1%"), "rack%207%2Fnode%3F1%25");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(&'static str, #[source] Option<Box<Layer>>);

    #[test]
    fn causes_follow_the_error_each_said_once() {
        let inner = Layer("connection refused", None);
        let middle = Layer("connect failed: connection refused", Some(Box::new(inner)));
        let outer = Layer("error sending request", Some(Box::new(middle)));
        assert_eq!(
            error_chain(&outer),
            "error sending request: connect failed: connection refused"
        );
    }
}
