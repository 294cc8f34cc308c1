//! `.env` and `env_file` files: `KEY=VALUE` lines, `#` comments, an optional `export `, values
//! in single quotes (taken as written) or double quotes (with `\n`, `\"`, `\\` escapes).

use std::collections::BTreeMap;

/// A line of an env file that is not `KEY=VALUE` (`line` counts from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    #[error("line {line}: {key:?} is not a variable name")]
    BadName { line: usize, key: String },
    #[error("line {line}: unclosed single quote")]
    UnclosedSingle { line: usize },
    #[error("line {line}: unclosed double quote")]
    UnclosedDouble { line: usize },
}

pub fn parse(text: &str) -> Result<BTreeMap<String, String>, EnvFileError> {
    let mut out = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            // A bare name: the variable is set, with an empty value.
            None => (line, ""),
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Err(EnvFileError::BadName { line: n + 1, key: key.to_string() });
        }
        let value = if let Some(v) = value.strip_prefix('\'') {
            v.strip_suffix('\'').ok_or(EnvFileError::UnclosedSingle { line: n + 1 })?.to_string()
        } else if let Some(v) = value.strip_prefix('"') {
            let v = v.strip_suffix('"').ok_or(EnvFileError::UnclosedDouble { line: n + 1 })?;
            let mut s = String::with_capacity(v.len());
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(other) => s.push(other),
                        None => s.push('\\'),
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else {
            // An unquoted value ends at ` #` (an inline comment).
            value.split(" #").next().unwrap_or("").trim_end().to_string()
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quotes_and_comments() {
        let env = parse("# comment\n\nA=1\nexport B = two words # note\nC='it''s $raw'\nD=\"x\\ny\"\nE\nF=a=b\n").unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "it''s $raw");
        assert_eq!(env["D"], "x\ny");
        assert_eq!(env["E"], "");
        assert_eq!(env["F"], "a=b");
        assert_eq!(parse("A='x\n").unwrap_err().to_string(), "line 1: unclosed single quote");
        assert!(parse("bad key=1").unwrap_err().to_string().contains("not a variable name"));
    }
}
