//! kubectl-style tables: upper-case headers, columns padded to their widest cell and separated
//! by three spaces, no trailing blanks.

/// Renders rows (the first one is the header) with `indent` before each line.
pub fn render<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(indent);
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            line.push_str(c);
            if i + 1 < N {
                let pad = w - c.chars().count() + 3;
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
    fn columns_line_up_and_lines_have_no_trailing_blanks() {
        let rows = [
            ["NAME".to_string(), "TYPE".into(), "X".into()],
            ["a-long-name".to_string(), "m5.large".into(), "".into()],
        ];
        assert_eq!(
            render(&rows, ""),
            "NAME          TYPE       X\na-long-name   m5.large\n"
        );
    }
}
