//! One script section (`%post`, `%runscript`, `%appinstall NAME`, ...): its arguments, its
//! body, and the two ways Apptainer turns them into something to run
//! (`internal/pkg/build/util.go` `getSectionScriptArgs`, `metadata.go` `handleShebangScript`).

/// The interpreter of a script file that names none.
pub const DEFAULT_SHEBANG: &str = "#!/bin/sh";

/// A script section, repeated sections joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// What follows the section name on its line, up to a `#`, trimmed: `-c /bin/bash` for
    /// `%post -c /bin/bash`. Empty when there is none.
    pub args: String,
    /// The lines after the section line, each ending in `\n`, blank and comment lines kept.
    /// A section given twice has both bodies, in file order.
    pub body: String,
    /// The line of the (first) section keyword.
    pub line: usize,
}

impl Script {
    /// Whether Apptainer skips this section: it does when the body is the empty string (a
    /// body of blank lines still runs).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The interpreter line and the rest of the body, as Apptainer writes `%runscript`,
    /// `%startscript` and `%test`: a body whose first non-blank line starts with `#!` keeps that
    /// line as its interpreter, otherwise `#!/bin/sh`; the section arguments are appended to the
    /// interpreter line (`%runscript -e` gives `#!/bin/sh -e`).
    pub fn shebang(&self) -> (String, &str) {
        let mut rest = self.body.as_str();
        let mut shebang = DEFAULT_SHEBANG.to_string();
        let mut scan = self.body.as_str();
        while !scan.is_empty() {
            let (line, after) = scan.split_once('\n').unwrap_or((scan, ""));
            if line.trim().is_empty() {
                scan = after;
                continue;
            }
            if line.trim_start().starts_with("#!") {
                shebang = line.trim().to_string();
                rest = after;
            }
            break;
        }
        if !self.args.is_empty() {
            shebang.push(' ');
            shebang.push_str(&self.args);
        }
        (shebang, rest)
    }

    /// The file Apptainer writes for `%runscript`, `%startscript` and `%test`
    /// (`/.singularity.d/runscript`, ...): interpreter line, blank line, body, newline.
    pub fn script_file(&self) -> String {
        let (shebang, rest) = self.shebang();
        format!("{shebang}\n\n{rest}\n")
    }

    /// The command that runs `%pre`, `%setup` and `%post` once the body is saved at
    /// `script_path`: `/bin/sh -ex [ARGS] SCRIPT`. With `-c`, everything after `-c` and the
    /// script path become one command string (`%post -c /bin/bash` gives
    /// `/bin/sh -ex -c "/bin/bash SCRIPT"`), as in Apptainer. The parser rejects a `-c` with
    /// nothing after it; here such a `-c` runs the script path itself.
    pub fn shell_command(&self, script_path: &str) -> Vec<String> {
        let mut command = vec!["/bin/sh".to_string(), "-ex".to_string()];
        let params: Vec<&str> = self.args.split_whitespace().collect();
        match params.iter().position(|p| *p == "-c") {
            Some(i) => {
                command.extend(params[..=i].iter().map(|p| p.to_string()));
                let mut shell: Vec<&str> = params[i + 1..].to_vec();
                shell.push(script_path);
                command.push(shell.join(" "));
            }
            None => {
                command.extend(params.iter().map(|p| p.to_string()));
                command.push(script_path.to_string());
            }
        }
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(args: &str, body: &str) -> Script {
        Script {
            args: args.to_string(),
            body: body.to_string(),
            line: 1,
        }
    }

    #[test]
    fn test_shebang_default_and_args() {
        let s = script("", "    echo hi\n");
        assert_eq!(s.shebang(), ("#!/bin/sh".to_string(), "    echo hi\n"));
        assert_eq!(s.script_file(), "#!/bin/sh\n\n    echo hi\n\n");
        let s = script("-e", "echo hi\n");
        assert_eq!(s.shebang().0, "#!/bin/sh -e");
    }

    #[test]
    fn test_shebang_from_first_line() {
        let s = script("", "#!/bin/bash\necho $BASH\n");
        assert_eq!(s.shebang(), ("#!/bin/bash".to_string(), "echo $BASH\n"));
        assert_eq!(s.script_file(), "#!/bin/bash\n\necho $BASH\n\n");
        // Indented and after blank lines (Apptainer mishandles the blank lines).
        let s = script("-x", "\n   #!/usr/bin/env python3  \nprint(1)\n");
        assert_eq!(
            s.shebang(),
            ("#!/usr/bin/env python3 -x".to_string(), "print(1)\n")
        );
        // A `#!` that is not the first line is an ordinary comment.
        let s = script("", "echo a\n#!/bin/bash\n");
        assert_eq!(s.shebang().0, "#!/bin/sh");
        // Only a shebang.
        let s = script("", "#!/bin/bash");
        assert_eq!(s.shebang(), ("#!/bin/bash".to_string(), ""));
    }

    #[test]
    fn test_shell_command() {
        let s = script("", "x\n");
        assert_eq!(
            s.shell_command("/.post.script"),
            ["/bin/sh", "-ex", "/.post.script"]
        );
        let s = script("-c /bin/bash", "x\n");
        assert_eq!(
            s.shell_command("/.post.script"),
            ["/bin/sh", "-ex", "-c", "/bin/bash /.post.script"]
        );
        let s = script("-c /bin/bash extra stuff here", "x\n");
        assert_eq!(
            s.shell_command("/s"),
            ["/bin/sh", "-ex", "-c", "/bin/bash extra stuff here /s"]
        );
        let s = script("-u -o pipefail", "x\n");
        assert_eq!(
            s.shell_command("/s"),
            ["/bin/sh", "-ex", "-u", "-o", "pipefail", "/s"]
        );
        let s = script("-c", "x\n");
        assert_eq!(s.shell_command("/s"), ["/bin/sh", "-ex", "-c", "/s"]);
    }

    #[test]
    fn test_is_empty() {
        assert!(script("", "").is_empty());
        assert!(!script("", "\n").is_empty());
    }
}
