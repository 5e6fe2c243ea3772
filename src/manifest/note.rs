//! The admin's change note (`tiffin fleet publish -m "…"`): one short line of text, carried in
//! the signed manifest and shown to the person at the machine (tray, notification, `tiffin
//! status`), in reports and in `fleet status`.

/// The longest note, in characters: a menu line and a notification, not a changelog.
pub const MAX_NOTE_CHARS: usize = 200;

/// Whether `note` may stand in a manifest: one line, no control characters, not blank, at most
/// [`MAX_NOTE_CHARS`]. Every UI prints it as it is, so nothing in it may move a cursor.
pub fn check_note(note: &str) -> Result<(), String> {
    if note.trim().is_empty() {
        return Err("note is empty".into());
    }
    if let Some(c) = note.chars().find(|c| c.is_control()) {
        return Err(format!(
            "note has the control character U+{:04X}; a note is one line of text",
            c as u32
        ));
    }
    let n = note.chars().count();
    if n > MAX_NOTE_CHARS {
        return Err(format!(
            "note is {n} characters, more than the {MAX_NOTE_CHARS} allowed"
        ));
    }
    Ok(())
}

/// A note from free text (a commit subject, `-m`): its first non-blank line, control characters
/// dropped, whitespace trimmed, cut to [`MAX_NOTE_CHARS`] with an ellipsis. `None` when nothing
/// is left.
pub fn clean_note(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        return None;
    }
    if clean.chars().count() <= MAX_NOTE_CHARS {
        return Some(clean.to_string());
    }
    let mut cut: String = clean.chars().take(MAX_NOTE_CHARS - 1).collect();
    cut.push('…');
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_one_short_line_of_text() {
        assert!(check_note("Adds the office printer").is_ok());
        assert!(check_note("").is_err());
        assert!(check_note("two\nlines").unwrap_err().contains("U+000A"));
        assert!(check_note("\u{1b}[2Jclear").unwrap_err().contains("U+001B"));
        assert!(check_note(&"x".repeat(MAX_NOTE_CHARS + 1))
            .unwrap_err()
            .contains("201 characters"));
    }

    #[test]
    fn free_text_becomes_a_valid_note_or_none() {
        assert_eq!(
            clean_note("\n  Adds the office printer \n\nbody").as_deref(),
            Some("Adds the office printer")
        );
        assert_eq!(clean_note("a\tb\u{7}").as_deref(), Some("ab"));
        assert_eq!(clean_note(" \n\t\n"), None);
        let long = clean_note(&"é".repeat(500)).unwrap();
        assert_eq!(long.chars().count(), MAX_NOTE_CHARS);
        assert!(check_note(&long).is_ok());
    }
}
