//! A small evaluator for environment scripts, used where the container has no `/bin/sh`
//! and for `--env-file`.
//!
//! Apptainer evaluates `/.singularity.d/env/*.sh` with an embedded POSIX shell interpreter.
//! sifr runs those scripts with the container's own `/bin/sh` whenever it has one (that is the
//! faithful path, see `launch::action`). For images without a shell, and for `--env-file` on the
//! host, this module understands the subset that environment files use in practice:
//! assignments (`A=b`, `export A=b C=d`, `export A`, `readonly A=b`), `unset A`, comments,
//! `;`-separated statements, line continuations, single and double quotes, backslash escapes
//! and parameter expansion (`$A`, `${A}`, `${A:-w}`, `${A-w}`, `${A:+w}`, `${A+w}`, `${A:=w}`).
//! Anything else (control flow, functions, command substitution) is skipped and reported, one
//! note per statement; the caller decides whether to log those notes.

use std::collections::BTreeMap;

/// Variables known to the evaluator and whether they are exported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellEnv {
    vars: BTreeMap<String, (String, bool)>,
    /// `set -a`: every assignment exports.
    allexport: bool,
}

impl ShellEnv {
    /// Starts from an environment: every variable is exported.
    pub fn from_env<I, K, V>(vars: I) -> ShellEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        ShellEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), (v.into(), true)))
                .collect(),
            allexport: false,
        }
    }

    /// Starts as Apptainer evaluates an `--env-file`: the variables are visible but not
    /// exported, and every assignment exports (`set -a`), so [`ShellEnv::exported`] is
    /// exactly what the script set.
    pub fn allexport_over<I, K, V>(vars: I) -> ShellEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        ShellEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), (v.into(), false)))
                .collect(),
            allexport: true,
        }
    }

    /// The value of a variable, exported or not.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|(v, _)| v.as_str())
    }

    /// Sets a variable, keeping its exported flag (new variables are not exported).
    pub fn set(&mut self, name: &str, value: String) {
        let exported = self.allexport || self.vars.get(name).is_some_and(|(_, e)| *e);
        self.vars.insert(name.to_string(), (value, exported));
    }

    /// Sets and exports a variable.
    pub fn export(&mut self, name: &str, value: Option<String>) {
        match value {
            Some(v) => {
                self.vars.insert(name.to_string(), (v, true));
            }
            None => {
                if let Some(entry) = self.vars.get_mut(name) {
                    entry.1 = true;
                } else {
                    self.vars.insert(name.to_string(), (String::new(), true));
                }
            }
        }
    }

    pub fn unset(&mut self, name: &str) {
        self.vars.remove(name);
    }

    /// The exported variables, as an environment.
    pub fn exported(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(_, (_, e))| *e)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// Every variable, exported or not.
    pub fn all(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// Evaluates a script. Returns one note per statement that was skipped.
    pub fn eval(&mut self, script: &str) -> Vec<String> {
        let mut notes = Vec::new();
        for (lineno, stmt) in split_statements(script) {
            if let Err(why) = self.eval_statement(&stmt) {
                notes.push(format!("line {lineno}: {why}: {}", stmt.trim()));
            }
        }
        notes
    }

    fn eval_statement(&mut self, stmt: &str) -> Result<(), String> {
        let words = split_words(stmt)?;
        let Some(first) = words.first() else {
            return Ok(());
        };
        match first.raw.as_str() {
            "export" | "readonly" | "declare" | "typeset" => {
                for w in &words[1..] {
                    if w.raw.starts_with('-') {
                        continue;
                    }
                    match split_assignment(&w.raw) {
                        Some((name, value)) => {
                            let v = self.expand(value)?;
                            self.export(name, Some(v));
                        }
                        None if is_name(&w.raw) => self.export(&w.raw, None),
                        None => return Err(format!("invalid name {:?}", w.raw)),
                    }
                }
                Ok(())
            }
            "unset" => {
                for w in &words[1..] {
                    if !w.raw.starts_with('-') {
                        self.unset(&w.raw);
                    }
                }
                Ok(())
            }
            ":" | "true" => Ok(()),
            _ => {
                // A run of assignments with no command.
                let mut pending = Vec::new();
                for w in &words {
                    match split_assignment(&w.raw) {
                        Some((name, value)) => pending.push((name.to_string(), value.to_string())),
                        None => return Err("unsupported command".to_string()),
                    }
                }
                for (name, value) in pending {
                    let v = self.expand(&value)?;
                    self.set(&name, v);
                }
                Ok(())
            }
        }
    }

    /// Expands one word: quotes, escapes and parameter expansion.
    pub fn expand(&self, word: &str) -> Result<String, String> {
        let chars: Vec<char> = word.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '\\' => {
                    if let Some(c) = chars.get(i + 1) {
                        out.push(*c);
                    }
                    i += 2;
                }
                '\'' => {
                    let end = find_from(&chars, i + 1, '\'').ok_or("unterminated single quote")?;
                    out.extend(&chars[i + 1..end]);
                    i = end + 1;
                }
                '"' => {
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err("unterminated double quote".to_string()),
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some('\\') => {
                                match chars.get(i + 1) {
                                    Some(c @ ('$' | '`' | '"' | '\\')) => out.push(*c),
                                    Some('\n') => {}
                                    Some(c) => {
                                        out.push('\\');
                                        out.push(*c);
                                    }
                                    None => return Err("unterminated double quote".to_string()),
                                }
                                i += 2;
                            }
                            Some('$') => {
                                let (s, next) = self.expand_dollar(&chars, i)?;
                                out.push_str(&s);
                                i = next;
                            }
                            Some('`') => return Err("command substitution".to_string()),
                            Some(c) => {
                                out.push(*c);
                                i += 1;
                            }
                        }
                    }
                }
                '$' => {
                    let (s, next) = self.expand_dollar(&chars, i)?;
                    out.push_str(&s);
                    i = next;
                }
                '`' => return Err("command substitution".to_string()),
                '~' if i == 0 => {
                    out.push_str(self.get("HOME").unwrap_or("~"));
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Expands the `$...` starting at `chars[i]`; returns the text and the next index.
    fn expand_dollar(&self, chars: &[char], i: usize) -> Result<(String, usize), String> {
        match chars.get(i + 1) {
            Some('{') => {
                let end = matching_brace(chars, i + 2).ok_or("unterminated ${")?;
                let inner: String = chars[i + 2..end].iter().collect();
                Ok((self.expand_braced(&inner)?, end + 1))
            }
            Some('(') => Err("command substitution".to_string()),
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                Ok((self.get(&name).unwrap_or("").to_string(), j))
            }
            Some(c) if c.is_ascii_digit() || matches!(c, '@' | '*' | '#' | '?' | '$' | '!') => {
                // Positional and special parameters are empty in environment files.
                Ok((String::new(), i + 2))
            }
            _ => Ok(("$".to_string(), i + 1)),
        }
    }

    fn expand_braced(&self, inner: &str) -> Result<String, String> {
        let name_len = inner
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map(|(n, _)| n)
            .unwrap_or(inner.len());
        let (name, op) = inner.split_at(name_len);
        if name.is_empty() {
            return Err(format!("unsupported expansion ${{{inner}}}"));
        }
        let value = self.get(name);
        let set = value.is_some();
        let non_empty = value.is_some_and(|v| !v.is_empty());
        let value = value.unwrap_or("").to_string();
        let word = |w: &str| self.expand(w);
        Ok(match op {
            "" => value,
            _ if op.starts_with(":-") => {
                if non_empty {
                    value
                } else {
                    word(&op[2..])?
                }
            }
            _ if op.starts_with(":=") => {
                if non_empty {
                    value
                } else {
                    word(&op[2..])?
                }
            }
            _ if op.starts_with(":+") => {
                if non_empty {
                    word(&op[2..])?
                } else {
                    String::new()
                }
            }
            _ if op.starts_with('-') => {
                if set {
                    value
                } else {
                    word(&op[1..])?
                }
            }
            _ if op.starts_with('+') => {
                if set {
                    word(&op[1..])?
                } else {
                    String::new()
                }
            }
            _ => return Err(format!("unsupported expansion ${{{inner}}}")),
        })
    }
}

/// A word as written (quotes kept), for later expansion.
struct Word {
    raw: String,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NAME=value` → (NAME, value) when NAME is a valid name.
fn split_assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    is_name(name).then_some((name, value))
}

fn find_from(chars: &[char], from: usize, c: char) -> Option<usize> {
    (from..chars.len()).find(|&j| chars[j] == c)
}

/// How deep `${` and `"` may nest in one word (a malformed file gets a note, not a stack
/// overflow).
const MAX_NESTING: usize = 64;

/// Index of the `}` closing a `${` whose body starts at `from`.
fn matching_brace(chars: &[char], from: usize) -> Option<usize> {
    brace_at(chars, from, 0)
}

fn brace_at(chars: &[char], from: usize, nesting: usize) -> Option<usize> {
    if nesting > MAX_NESTING {
        return None;
    }
    let mut depth = 1;
    let mut j = from;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 1,
            // A quoted word inside the braces (`"${X:-"a } b"}"`, as Apptainer writes
            // 10-docker2singularity.sh): its `}` and spaces are not the expansion's.
            '"' => j = quote_at(chars, j + 1, nesting + 1)?,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

/// The index of the `"` closing a double-quoted string whose text starts at `from`:
/// escapes skipped, and a `${...}` inside taken whole (its own quotes nest).
fn closing_quote(chars: &[char], from: usize) -> Option<usize> {
    quote_at(chars, from, 0)
}

fn quote_at(chars: &[char], from: usize, nesting: usize) -> Option<usize> {
    if nesting > MAX_NESTING {
        return None;
    }
    let mut j = from;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 1,
            '"' => return Some(j),
            '$' if chars.get(j + 1) == Some(&'{') => j = brace_at(chars, j + 2, nesting + 1)?,
            _ => {}
        }
        j += 1;
    }
    None
}

/// Splits a statement into words, honouring quotes; rejects shell syntax we do not run.
fn split_words(stmt: &str) -> Result<Vec<Word>, String> {
    let chars: Vec<char> = stmt.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(Word {
                        raw: std::mem::take(&mut cur),
                    });
                    in_word = false;
                }
                i += 1;
            }
            '\'' => {
                let end = find_from(&chars, i + 1, '\'').ok_or("unterminated single quote")?;
                cur.extend(&chars[i..=end]);
                in_word = true;
                i = end + 1;
            }
            '"' => {
                let j = closing_quote(&chars, i + 1).ok_or("unterminated double quote")?;
                cur.extend(&chars[i..=j]);
                in_word = true;
                i = j + 1;
            }
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.get(i + 1) {
                    cur.push(*n);
                }
                in_word = true;
                i += 2;
            }
            '$' if chars.get(i + 1) == Some(&'{') => {
                let end = matching_brace(&chars, i + 2).ok_or("unterminated ${")?;
                cur.extend(&chars[i..=end]);
                in_word = true;
                i = end + 1;
            }
            '|' | '&' | '<' | '>' | '(' | ')' | '{' | '}' => {
                return Err("unsupported shell syntax".to_string());
            }
            _ => {
                cur.push(c);
                in_word = true;
                i += 1;
            }
        }
    }
    if in_word {
        words.push(Word { raw: cur });
    }
    if let Some(first) = words.first() {
        const KEYWORDS: [&str; 16] = [
            "if", "then", "else", "elif", "fi", "for", "do", "done", "case", "esac", "while",
            "until", "function", "source", ".", "eval",
        ];
        if KEYWORDS.contains(&first.raw.as_str()) {
            return Err("unsupported shell syntax".to_string());
        }
    }
    Ok(words)
}

/// Splits a script into statements (by newline and `;`, outside quotes), joining line
/// continuations and dropping comments. Returns (line number, statement).
fn split_statements(script: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut quote: Option<char> = None;
    let mut chars = script.chars().peekable();
    let mut at_word_start = true;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\\') => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                    line += 1;
                } else {
                    cur.push(c);
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                at_word_start = false;
                continue;
            }
            (Some('"'), '\\') => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    if n == '\n' {
                        line += 1;
                    }
                    cur.push(n);
                }
                continue;
            }
            (None, '#') if at_word_start => {
                // A comment runs to the end of the line.
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    chars.next();
                }
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '\n' | ';') => {
                if !cur.trim().is_empty() {
                    out.push((start_line, std::mem::take(&mut cur)));
                }
                cur.clear();
                if c == '\n' {
                    line += 1;
                }
                start_line = line;
                at_word_start = true;
                continue;
            }
            _ => {}
        }
        if c == '\n' {
            line += 1;
        }
        at_word_start = quote.is_none() && (c == ' ' || c == '\t');
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push((start_line, cur));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ShellEnv {
        ShellEnv::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn test_assignments_and_exports() {
        let mut e = env(&[("PATH", "/bin"), ("HOME", "/home/u")]);
        let notes = e.eval(
            "# comment\nexport PATH=\"/opt/bin:$PATH\"\nFOO=bar\nexport FOO\nLOCAL=1\n\
             export A=1 B='two words'; C=${HOME}/c\nexport C\n",
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(e.get("PATH"), Some("/opt/bin:/bin"));
        let exported: BTreeMap<String, String> = e.exported().into_iter().collect();
        assert_eq!(exported["FOO"], "bar");
        assert_eq!(exported["B"], "two words");
        assert_eq!(exported["C"], "/home/u/c");
        assert!(!exported.contains_key("LOCAL"));
    }

    #[test]
    fn test_quoted_default_words_nest_as_apptainer_writes_them() {
        // 10-docker2singularity.sh lines: the default is a double-quoted word inside the
        // double-quoted expansion, escaped as Apptainer's shell.Escape does.
        let mut e = env(&[("SET", "mine")]);
        let notes = e.eval(
            "export A=\"${A:-\"two words } here\"}\"\n\
             export T=\"${T:-\"a \\\"b\\\" \\$c \\`d\\` \\\\e\"}\"\n\
             export SET=\"${SET:-\"x y\"}\"\n",
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(e.get("A"), Some("two words } here"));
        assert_eq!(e.get("T"), Some("a \"b\" $c `d` \\e"));
        assert_eq!(e.get("SET"), Some("mine"));
        // Nesting without end is a note, not a crash.
        let deep = format!("X=\"{}\"\n", "${X:-\"".repeat(100_000));
        let notes = e.eval(&deep);
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn test_parameter_expansion_forms() {
        let mut e = env(&[("SET", "v"), ("EMPTY", "")]);
        e.eval(
            "export A=${UNSET:-d} B=${EMPTY:-d} C=${EMPTY-d} D=${SET:+alt} E=${UNSET+alt} \
             F=\"${SET}x\" G='$SET' H=\\$SET I=$1",
        );
        assert_eq!(e.get("A"), Some("d"));
        assert_eq!(e.get("B"), Some("d"));
        assert_eq!(e.get("C"), Some(""));
        assert_eq!(e.get("D"), Some("alt"));
        assert_eq!(e.get("E"), Some(""));
        assert_eq!(e.get("F"), Some("vx"));
        assert_eq!(e.get("G"), Some("$SET"));
        assert_eq!(e.get("H"), Some("$SET"));
        assert_eq!(e.get("I"), Some(""));
    }

    #[test]
    fn test_unsupported_statements_are_skipped_and_reported() {
        let mut e = env(&[]);
        let notes = e.eval("if [ -z \"$X\" ]; then\n  X=1\nfi\nY=$(date)\nexport Z=ok\nls -l\n");
        assert_eq!(e.get("Z"), Some("ok"));
        assert!(e.get("Y").is_none());
        // `if`, `then`, `fi`, the substitution and the command are each reported; the
        // assignment inside the if-body is evaluated (we cannot know the condition).
        assert_eq!(notes.len(), 5, "{notes:?}");
        assert!(notes[0].starts_with("line 1:"));
    }

    #[test]
    fn test_line_continuation_and_unset() {
        let mut e = env(&[("GONE", "x")]);
        e.eval("export LONG=a\\\nb\nunset GONE\n");
        assert_eq!(e.get("LONG"), Some("ab"));
        assert!(e.get("GONE").is_none());
    }

    #[test]
    fn test_docker_env_file_shape() {
        // What Apptainer writes for OCI images (10-docker2singularity.sh).
        let mut e = env(&[]);
        let notes = e.eval(
            "#!/bin/sh\nexport PATH=\"${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}\"\n\
             export LANG=\"${LANG:-C.UTF-8}\"\n",
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            e.get("PATH"),
            Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        );
        assert_eq!(e.get("LANG"), Some("C.UTF-8"));
    }

    #[test]
    fn test_malformed_input_never_panics() {
        let inputs = [
            "\"",
            "'",
            "${",
            "${}",
            "$",
            "\\",
            "export",
            "export =x",
            "A=\"unterminated",
            "${A:-${B",
            "=",
            "a b c",
            "#",
            ";;;",
            "A=${#}",
        ];
        for s in inputs {
            let mut e = env(&[]);
            let _ = e.eval(s);
        }
    }
}
