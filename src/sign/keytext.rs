//! How keys are shown, as Apptainer shows them: user ids as `Name (Comment) <Email>`,
//! creation times in local time as Go prints them, and the `key list` entries. Used by
//! `key list` and by the listing shown when a key is chosen (`sign`, `key export`).

use super::pgp::KeyInfo;

/// A user id as Apptainer's `key list` prints it: `Name (Comment) <Email>`, the three parts
/// always shown (an empty comment as `()`), split the way Go's openpgp `parseUserId` splits.
pub fn user_text(id: &str) -> String {
    let (mut name, mut comment, mut email) = ((0, 0), (0, 0), (0, 0));
    let mut state = 0;
    for (at, c) in id.char_indices() {
        if state == 0 {
            name.0 = at;
            state = 1;
        }
        match state {
            1 if c == '(' => (state, name.1) = (2, at),
            1 if c == '<' => (state, name.1) = (5, at),
            2 => {
                comment.0 = at;
                state = 3;
                if c == ')' {
                    (state, comment.1) = (4, at);
                }
            }
            3 if c == ')' => (state, comment.1) = (4, at),
            4 if c == '<' => state = 5,
            5 => {
                email.0 = at;
                state = 6;
                if c == '>' {
                    (state, email.1) = (7, at);
                }
            }
            6 if c == '>' => (state, email.1) = (7, at),
            _ => {}
        }
    }
    match state {
        1 => name.1 = id.len(),
        3 => comment.1 = id.len(),
        6 => email.1 = id.len(),
        _ => {}
    }
    let part = |(a, b): (usize, usize)| id.get(a..b.max(a)).unwrap_or("").trim();
    format!("{} ({}) <{}>", part(name), part(comment), part(email))
}

/// A time as Go's `time.Time.String()` prints it for whole seconds:
/// `2006-01-02 15:04:05 -0700 MST`, given the local wall-clock time, the zone's offset in
/// seconds and its abbreviation (Go prints the numeric offset again when it has none).
pub fn go_time_text(wall: chrono::NaiveDateTime, offset: i64, abbrev: &str) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    let numeric = format!("{sign}{:02}{:02}", off / 3600, off % 3600 / 60);
    let zone = if abbrev.is_empty() { &numeric } else { abbrev };
    format!("{} {numeric} {zone}", wall.format("%Y-%m-%d %H:%M:%S"))
}

/// A key's creation time in the local time zone, as Apptainer prints it (its openpgp
/// library makes creation times with `time.Unix`, which is local time).
pub fn local_time_text(secs: u32) -> String {
    let t = libc::time_t::from(secs);
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `t` and writes `tm`, both valid for the call; it reads TZ.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    let utc = chrono::DateTime::from_timestamp(i64::from(secs), 0);
    let (offset, abbrev) = if ok {
        let abbrev = if tm.tm_zone.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null tm_zone points to a NUL-terminated string owned by libc's
            // time zone data, which lives as long as the process.
            unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
                .to_string_lossy()
                .into_owned()
        };
        (tm.tm_gmtoff, abbrev)
    } else {
        (0, "UTC".to_string())
    };
    match utc {
        Some(u) => go_time_text(
            u.naive_utc() + chrono::Duration::seconds(offset),
            offset,
            &abbrev,
        ),
        None => secs.to_string(),
    }
}

/// The `key list` entries, aligned as Apptainer's tabwriter does.
pub fn entries_text(keys: &[KeyInfo]) -> String {
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        let index = format!("{i})");
        let first = index.len() + 2;
        let mut rows: Vec<(String, &str, String)> = Vec::new();
        let users = if k.user_ids.is_empty() {
            vec![String::new()]
        } else {
            k.user_ids.clone()
        };
        for (j, u) in users.into_iter().enumerate() {
            let idx = if j == 0 { index.clone() } else { String::new() };
            rows.push((idx, "User:", user_text(&u)));
        }
        rows.push((String::new(), "Creation time:", local_time_text(k.created)));
        rows.push((String::new(), "Fingerprint:", k.fingerprint.clone()));
        rows.push((String::new(), "Length (in bits):", k.bits.to_string()));
        for (idx, label, value) in rows {
            out.push_str(&format!("{idx:<first$}{label:<19}{value}\n"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A key for tests with these user ids.
    pub(crate) fn info(users: &[&str]) -> KeyInfo {
        KeyInfo {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            fingerprint: "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84".into(),
            created: 1_588_023_280,
            bits: 2048,
            encrypted: false,
        }
    }

    #[test]
    fn test_user_text_is_name_comment_email() {
        assert_eq!(
            user_text("Unit Test <unit@test.com>"),
            "Unit Test () <unit@test.com>"
        );
        assert_eq!(
            user_text("name 1 (comment 1) <email.1@example.org>"),
            "name 1 (comment 1) <email.1@example.org>"
        );
        assert_eq!(user_text("Only Name"), "Only Name () <>");
        assert_eq!(user_text("<a@b>"), " () <a@b>");
        assert_eq!(user_text("N (c"), "N (c) <>");
        assert_eq!(user_text(""), " () <>");
    }

    #[test]
    fn test_go_time_text() {
        let wall = chrono::DateTime::from_timestamp(1_588_023_280, 0)
            .expect("time")
            .naive_utc();
        assert_eq!(
            go_time_text(wall, 0, "UTC"),
            "2020-04-27 21:34:40 +0000 UTC"
        );
        assert_eq!(
            go_time_text(wall, 9 * 3600, "JST"),
            "2020-04-27 21:34:40 +0900 JST"
        );
        assert_eq!(
            go_time_text(wall, -(3 * 3600 + 1800), ""),
            "2020-04-27 21:34:40 -0330 -0330"
        );
    }

    #[test]
    fn test_entries_text_layout() {
        let text = entries_text(&[info(&["Unit Test <unit@test.com>", "Alias <a@b>"])]);
        let created = local_time_text(1_588_023_280);
        assert_eq!(
            text,
            format!(
                "0)  User:              Unit Test () <unit@test.com>\n\
             \x20   User:              Alias () <a@b>\n\
             \x20   Creation time:     {created}\n\
             \x20   Fingerprint:       12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84\n\
             \x20   Length (in bits):  2048\n\n"
            )
        );
        assert_eq!(entries_text(&[]), "");
    }
}
