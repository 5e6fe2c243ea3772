//! Text a host wrote (reports, logs, `seen.json`), made inert before it reaches the admin's
//! terminal: a host must not send escape sequences (`ESC ] 0 ; title BEL` retitles the
//! terminal, `ESC [ 2 J` clears it) or break a table's rows. `fleet status` and `fleet logs`
//! both print through here.

/// What a control character becomes.
const SHOWN_AS: char = '\u{FFFD}';

/// `s` with every control character (C0, DEL and C1, `\r` included) shown as `�`, except the
/// line breaks and tabs of a multi-line text such as a log.
pub fn inert_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                SHOWN_AS
            } else {
                c
            }
        })
        .collect()
}

/// The first line of `s`, at most `max` characters (then `…`), every control character shown
/// as `�`: one table cell.
pub fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    let plain = |c: char| if c.is_control() { SHOWN_AS } else { c };
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).map(plain).collect::<String>())
    } else {
        line.chars().map(plain).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_become_visible_and_lines_stay() {
        let hostile = "ok\n\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31m\tend";
        let t = inert_text(hostile);
        assert!(!t.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        assert_eq!(t.lines().count(), 2);
        assert!(t.contains("]0;owned") && t.ends_with("\tend"), "{t:?}");
        assert_eq!(first_line("a\u{1b}[2Jb\nc", 10), "a\u{FFFD}[2Jb");
        assert_eq!(first_line("abcdef", 3), "abc…");
    }
}
