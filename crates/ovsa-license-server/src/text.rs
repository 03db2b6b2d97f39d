//! Text the admin commands print and the service logs: customer-controlled strings made safe for
//! a terminal or a log file ([`escape_controls`], shared with `ovsatool` from
//! [`ovsa_core::text`]), and aligned tables ([`table`]).

pub use ovsa_core::text::{escape_controls, to_json_text};

/// Formats rows under a header (none if `header` is empty) as columns separated by two spaces,
/// each as wide as its widest cell (counted in characters); the last column is not padded.
/// Cells are escaped with [`escape_controls`], so one row is always one line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let head = (!header.is_empty()).then(|| header.iter().map(|h| h.to_string()).collect());
    let cells: Vec<Vec<String>> = head
        .into_iter()
        .chain(rows.iter().map(|r| {
            r.iter()
                .map(|c| escape_controls(c).into_owned())
                .collect::<Vec<_>>()
        }))
        .collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < row.len() {
                let pad = widths[i] - c.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
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
    fn table_columns_align() {
        let t = table(
            &["a", "bb", "c"],
            &[
                vec!["host_ak_challenge".into(), "x".into(), "last".into()],
                vec!["add".into(), "yyyy\n".into(), "l".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        // "host_ak_challenge" is 17 characters: the second column starts at 19 on every line,
        // the third at 19 + len("yyyy\\n") + 2 = 27.
        for (l, second) in lines.iter().zip(["bb", "x", "yyyy\\n"]) {
            assert_eq!(&l[19..19 + second.len()], second, "{t}");
        }
        for (l, third) in lines.iter().zip(["c", "last", "l"]) {
            assert_eq!(&l[27..], third, "{t}");
        }
        assert!(lines[2].contains("yyyy\\n"), "{t}");
        assert_eq!(table(&[], &[vec!["k".into(), "v".into()]]), "k  v\n");
    }
}
