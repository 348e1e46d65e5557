//! The model card (Markdown) as HTML, for the page.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};

/// Renders `markdown` (CommonMark with tables) as an HTML fragment that is safe to insert into
/// the page: raw HTML in the card is shown as text, links keep only their text and images only
/// their description, so that a package cannot run script in, or load anything into, the page.
pub fn card_html(markdown: &str) -> String {
    let events =
        Parser::new_ext(markdown, Options::ENABLE_TABLES).filter_map(|event| match event {
            Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
            Event::Start(Tag::Link { .. } | Tag::Image { .. })
            | Event::End(TagEnd::Link | TagEnd::Image) => None,
            other => Some(other),
        });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::card_html;

    #[test]
    fn headings_lists_tables_and_code_become_html() {
        let html = card_html(
            "# Card\n\n## Quality\n\n- Weights SHA-256: `ab`\n\n| Metric | Value |\n|---|---|\n| ROC-AUC | 0.95 |\n",
        );
        for part in [
            "<h1>Card</h1>",
            "<h2>Quality</h2>",
            "<li>Weights SHA-256: <code>ab</code></li>",
            "<table>",
            "<td>ROC-AUC</td>",
        ] {
            assert!(html.contains(part), "{part} missing from {html}");
        }
    }

    #[test]
    fn raw_html_links_and_images_cannot_act() {
        let html = card_html(
            "<script>alert(1)</script>\n\nsee [here](javascript:alert(1)) and ![a chart](https://example.invalid/x.png) <b onclick=x>bold</b>",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b "), "{html}");
        assert!(!html.contains("href"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;") && html.contains("here") && html.contains("a chart")
        );
    }
}
