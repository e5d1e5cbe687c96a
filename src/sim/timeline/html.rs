//! The page: a [`Timeline`] as one self-contained HTML file. The model goes in as one JSON blob
//! in a `<script type="application/json">`; the script and style sheet are the hand-written
//! files beside this one, inlined. Nothing on the page names another file or a host: it opens
//! from disk with no network.

use super::Timeline;
use std::io::Write;
use std::path::Path;

/// Installs the error recorder before anything else runs.
const ERRORS_SCRIPT: &str = include_str!("errors.js");
const TIMELINE_SCRIPT: &str = include_str!("timeline.js");
const STYLE: &str = include_str!("timeline.css");

/// The page for `timeline`.
pub fn render_html(timeline: &Timeline) -> String {
    let json = script_safe_json(timeline);
    let mut page = String::with_capacity(json.len() + TIMELINE_SCRIPT.len() + STYLE.len() + 2_048);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\" data-timeline-ready=\"false\">\n<head>\n");
    page.push_str("<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    page.push_str("<meta name=\"generator\" content=\"lockstep ");
    page.push_str(env!("CARGO_PKG_VERSION"));
    page.push_str("\">\n<title>");
    page.push_str(&escape_text(&timeline.title));
    page.push_str("</title>\n<script>\n");
    page.push_str(ERRORS_SCRIPT);
    page.push_str("</script>\n<style>\n");
    page.push_str(STYLE);
    page.push_str("</style>\n</head>\n<body>\n<div id=\"app\">");
    page.push_str("<noscript>This timeline is drawn by JavaScript; please enable it.</noscript>");
    page.push_str("</div>\n<script type=\"application/json\" id=\"timeline-data\">");
    page.push_str(&json);
    page.push_str("</script>\n<script>\n");
    page.push_str(TIMELINE_SCRIPT);
    page.push_str("</script>\n</body>\n</html>\n");
    page
}

/// Writes the page for `timeline` to `path`.
pub fn write_html(path: &Path, timeline: &Timeline) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(render_html(timeline).as_bytes())?;
    file.flush()
}

/// The model as JSON that can sit inside a `<script>` element and that names no address:
/// every `<` becomes `\u003c` (so no `</script>` or `<!--` can end or change the element),
/// and every `://` becomes `:\/\/` (a scenario description may quote a URL; it stays the same
/// text, but the file never holds one). Both are JSON escapes, and outside strings JSON has
/// neither character sequence, so the parsed value is unchanged.
fn script_safe_json(timeline: &Timeline) -> String {
    script_safe(&serde_json::to_string(timeline).expect("the model serialises"))
}

fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c").replace("://", ":\\/\\/")
}

/// Text for an HTML element's content. `/` too, so that no `://` appears.
fn escape_text(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '/' => escaped.push_str("&#47;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blob_survives_script_breaking_text_and_names_no_address() {
        let json = r#"{"a":"</script><!-- https://example.org x\\://y"}"#;
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let safe = script_safe(&serde_json::to_string(&value).unwrap());
        assert!(!safe.contains('<'));
        assert!(!safe.contains("://"));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value, "the same text after parsing");
        assert_eq!(escape_text("a<b>&\"c/d"), "a&lt;b&gt;&amp;&quot;c&#47;d");
    }

    #[test]
    fn the_inlined_sources_name_no_address_and_cannot_end_their_element() {
        for (name, source) in [
            ("errors.js", ERRORS_SCRIPT),
            ("timeline.js", TIMELINE_SCRIPT),
            ("timeline.css", STYLE),
        ] {
            let lower = source.to_lowercase();
            assert!(
                !lower.contains("http://") && !lower.contains("https://"),
                "{name}"
            );
            assert!(
                !lower.contains("</script") && !lower.contains("</style"),
                "{name}"
            );
            assert!(
                !lower.contains("@import") && !lower.contains("url("),
                "{name}"
            );
        }
    }
}
