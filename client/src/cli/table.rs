//! A minimal left-aligned text table for `metactl`'s human output (columns padded to their
//! widest cell, two spaces apart, no trailing spaces).

/// Renders `header` and `rows` as aligned columns, one line each, ending in a newline. An
/// empty `header` prints no header line (key/value listings).
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header
        .len()
        .max(rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0usize; cols];
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let all = || {
        (!header.is_empty())
            .then_some(&header)
            .into_iter()
            .chain(rows)
    };
    for row in all() {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_without_trailing_spaces() {
        let t = render(
            &["ID", "ADDR"],
            &[
                vec!["1*".into(), "127.0.0.1:7001".into()],
                vec!["10".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID  ADDR\n1*  127.0.0.1:7001\n10  x\n");
        let kv = render(
            &[],
            &[
                vec!["a:".into(), "1".into()],
                vec!["long:".into(), "2".into()],
            ],
        );
        assert_eq!(kv, "a:     1\nlong:  2\n");
    }
}
