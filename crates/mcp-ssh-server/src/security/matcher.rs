//! Interpreter of the grammar table: checks the words after the program
//! name against a [`Spec`] and produces the validated words (paths
//! normalised) or the reason for refusing them.

use super::Blocked;
use super::grammar::{Pat, Spec};
use super::kinds::Kind;

/// How one word of the flag section was understood.
enum FlagUse<'w> {
    /// Exactly one flag spelling (`-l`, `--line-numbers`).
    Single(usize),
    /// A single-letter flag with its value attached (`-n5`).
    Attached(usize, &'w str),
    /// Several single-letter boolean flags (`-tlnp`).
    Cluster(Vec<usize>),
}

/// Check `args` (argv without the program name) against `spec`.
pub(crate) fn check_args(spec: &'static Spec, args: &[String]) -> Result<Vec<String>, Blocked> {
    let mut m = Matcher {
        spec,
        words: args,
        pos: 0,
        out: Vec::with_capacity(args.len()),
        context: spec.program.to_owned(),
        expected: Vec::new(),
        full: None,
    };
    m.flags()?;
    m.reject_late_flags()?;
    m.seq(spec.body)?;
    match m.words.get(m.pos) {
        None => Ok(m.out),
        Some(word) => Err(m.trailing(word)),
    }
}

struct Matcher<'a> {
    spec: &'static Spec,
    words: &'a [String],
    pos: usize,
    out: Vec<String>,
    /// Program name and the keywords consumed so far (`ip addr show`).
    context: String,
    /// Optional words that would have been accepted at this point.
    expected: Vec<&'static str>,
    /// Set when the last step consumed its maximum number of arguments.
    full: Option<usize>,
}

fn set_desc(set: &[&str]) -> String {
    match set {
        [one] => format!("`{one}`"),
        _ => format!("one of {}", set.join(", ")),
    }
}

impl<'a> Matcher<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).map(String::as_str)
    }

    fn prog(&self) -> &'static str {
        self.spec.program
    }

    fn consume_keyword(&mut self, word: &str) {
        self.pos += 1;
        self.out.push(word.to_owned());
        self.context.push(' ');
        self.context.push_str(word);
        self.expected.clear();
        self.full = None;
    }

    fn find_flag(&self, name: &str) -> Option<usize> {
        self.spec.flags.iter().position(|f| f.names.contains(&name))
    }

    fn canonical(&self, idx: usize) -> &'static str {
        self.spec.flags[idx].names[0]
    }

    fn parse_flag<'w>(&self, word: &'w str) -> Result<FlagUse<'w>, Blocked> {
        if let Some(idx) = self.find_flag(word) {
            return Ok(FlagUse::Single(idx));
        }
        let not_allowed = || {
            Blocked::new(format!(
                "flag `{word}` is not allowed for `{}`",
                self.prog()
            ))
        };
        let Some(letters) = word.strip_prefix('-') else {
            return Err(not_allowed());
        };
        if !self.spec.clusters || letters.starts_with('-') || letters.chars().count() < 2 {
            return Err(not_allowed());
        }
        let mut chars = letters.chars();
        let first = chars.next().map(|c| format!("-{c}")).unwrap_or_default();
        let value_flag = self
            .find_flag(&first)
            .filter(|&idx| self.spec.flags[idx].value.is_some());
        if let Some(idx) = value_flag {
            return Ok(FlagUse::Attached(idx, chars.as_str()));
        }
        let mut idxs = Vec::new();
        for c in letters.chars() {
            let name = format!("-{c}");
            match self.find_flag(&name) {
                Some(idx) if self.spec.flags[idx].value.is_none() => idxs.push(idx),
                Some(_) => {
                    return Err(Blocked::new(format!(
                        "flag `{name}` of `{}` takes a value and cannot be combined in `{word}`",
                        self.prog()
                    )));
                }
                None => {
                    return Err(Blocked::new(format!(
                        "flag `{name}` (in `{word}`) is not allowed for `{}`",
                        self.prog()
                    )));
                }
            }
        }
        Ok(FlagUse::Cluster(idxs))
    }

    fn check_value(&self, idx: usize, kind: Kind, value: &str) -> Result<String, Blocked> {
        kind.check(value).map_err(|reason| {
            Blocked::new(reason.unwrap_or_else(|| {
                format!(
                    "invalid value `{value}` for flag `{}` of `{}`: expected {}",
                    self.canonical(idx),
                    self.prog(),
                    kind.describe()
                )
            }))
        })
    }

    /// The leading flag section: words starting with `-`, each flag once.
    fn flags(&mut self) -> Result<(), Blocked> {
        let mut seen: Vec<usize> = Vec::new();
        while let Some(word) = self.peek().filter(|w| w.starts_with('-')) {
            self.pos += 1;
            let used = self.parse_flag(word)?;
            let idxs = match &used {
                FlagUse::Single(i) | FlagUse::Attached(i, _) => vec![*i],
                FlagUse::Cluster(v) => v.clone(),
            };
            for idx in idxs {
                if seen.contains(&idx) {
                    return Err(Blocked::new(format!(
                        "flag `{}` is given more than once for `{}`",
                        self.canonical(idx),
                        self.prog()
                    )));
                }
                seen.push(idx);
            }
            match used {
                FlagUse::Single(idx) => {
                    self.out.push(word.to_owned());
                    if let Some(kind) = self.spec.flags[idx].value {
                        let Some(value) = self.peek() else {
                            return Err(Blocked::new(format!(
                                "flag `{word}` of `{}` needs a value ({})",
                                self.prog(),
                                kind.describe()
                            )));
                        };
                        self.pos += 1;
                        let checked = self.check_value(idx, kind, value)?;
                        self.out.push(checked);
                    }
                }
                FlagUse::Attached(idx, value) => {
                    if let Some(kind) = self.spec.flags[idx].value {
                        let checked = self.check_value(idx, kind, value)?;
                        let name = &word[..word.len() - value.len()];
                        self.out.push(format!("{name}{checked}"));
                    }
                }
                FlagUse::Cluster(_) => self.out.push(word.to_owned()),
            }
        }
        for group in self.spec.one_of {
            let given: Vec<&str> = group
                .flags
                .iter()
                .copied()
                .filter(|name| seen.iter().any(|&i| self.canonical(i) == *name))
                .collect();
            if given.len() > 1 {
                return Err(Blocked::new(format!(
                    "flags {} cannot be combined for `{}`",
                    given.join(" and "),
                    self.prog()
                )));
            }
            if group.required && given.is_empty() {
                return Err(Blocked::new(format!(
                    "`{}` requires {}",
                    self.prog(),
                    match group.flags {
                        [one] => format!("the `{one}` flag"),
                        many => format!("one of the flags {}", many.join(", ")),
                    }
                )));
            }
        }
        Ok(())
    }

    /// After the flag section no word may start with `-`.
    fn reject_late_flags(&self) -> Result<(), Blocked> {
        for word in &self.words[self.pos..] {
            if word.starts_with('-') {
                self.parse_flag(word)?;
                return Err(Blocked::new(format!(
                    "flag `{word}` must come before the other arguments of `{}`",
                    self.prog()
                )));
            }
        }
        Ok(())
    }

    fn seq(&mut self, pats: &'static [Pat]) -> Result<(), Blocked> {
        for pat in pats {
            self.step(pat)?;
        }
        Ok(())
    }

    fn step(&mut self, pat: &'static Pat) -> Result<(), Blocked> {
        match *pat {
            Pat::Word(set) => match self.peek() {
                Some(w) if set.contains(&w) => self.consume_keyword(w),
                other => return Err(self.expected_here(&set_desc(set), other)),
            },
            Pat::OptWord(set) => match self.peek() {
                Some(w) if set.contains(&w) => self.consume_keyword(w),
                _ => self.expected.extend_from_slice(set),
            },
            Pat::Opt(set, rest) => match self.peek() {
                Some(w) if set.contains(&w) => {
                    self.consume_keyword(w);
                    self.seq(rest)?;
                }
                _ => self.expected.extend_from_slice(set),
            },
            Pat::Branch(alts) => {
                let word = self.peek();
                let alt = word.and_then(|w| alts.iter().find(|a| a.words.contains(&w)));
                match (alt, word) {
                    (Some(alt), Some(w)) => {
                        self.consume_keyword(w);
                        self.seq(alt.rest)?;
                    }
                    _ => {
                        let all: Vec<&str> = alts.iter().flat_map(|a| a.words).copied().collect();
                        return Err(self.expected_here(&set_desc(&all), word));
                    }
                }
            }
            Pat::Args { kind, min, max } => self.args(kind, min, max)?,
            Pat::Pairs(keys) => self.pairs(keys)?,
        }
        Ok(())
    }

    fn expected_here(&self, what: &str, got: Option<&str>) -> Blocked {
        Blocked::new(match got {
            Some(w) => format!("expected {what} after `{}`, got `{w}`", self.context),
            None => format!("missing {what} after `{}`", self.context),
        })
    }

    fn args(&mut self, kind: Kind, min: usize, max: usize) -> Result<(), Blocked> {
        let mut count = 0;
        while count < max {
            let Some(word) = self.peek() else { break };
            let checked = kind.check(word).map_err(|reason| {
                Blocked::new(reason.unwrap_or_else(|| {
                    format!(
                        "invalid argument `{word}` for `{}`: expected {}",
                        self.context,
                        kind.describe()
                    )
                }))
            })?;
            self.pos += 1;
            self.out.push(checked);
            self.expected.clear();
            count += 1;
        }
        if count < min {
            return Err(Blocked::new(if min == 1 {
                format!("`{}` needs {}", self.context, kind.describe())
            } else {
                format!(
                    "`{}` needs at least {min} arguments ({})",
                    self.context,
                    kind.describe()
                )
            }));
        }
        self.full = (count == max && max > 0).then_some(max);
        Ok(())
    }

    fn pairs(&mut self, keys: &'static [(&'static str, Kind)]) -> Result<(), Blocked> {
        let mut seen: Vec<&str> = Vec::new();
        while let Some(word) = self.peek() {
            let Some(&(key, kind)) = keys.iter().find(|(k, _)| *k == word) else {
                break;
            };
            if seen.contains(&key) {
                return Err(Blocked::new(format!(
                    "`{key}` is given more than once after `{}`",
                    self.context
                )));
            }
            seen.push(key);
            let Some(value) = self.words.get(self.pos + 1) else {
                return Err(Blocked::new(format!(
                    "missing {} after `{key}`",
                    kind.describe()
                )));
            };
            let checked = kind.check(value).map_err(|reason| {
                Blocked::new(reason.unwrap_or_else(|| {
                    format!(
                        "invalid value `{value}` for `{key}`: expected {}",
                        kind.describe()
                    )
                }))
            })?;
            self.pos += 2;
            self.out.push(key.to_owned());
            self.out.push(checked);
            self.expected.clear();
            self.full = None;
        }
        self.expected
            .extend(keys.iter().map(|(k, _)| *k).filter(|k| !seen.contains(k)));
        Ok(())
    }

    /// The refusal for a word left over after the whole grammar matched.
    fn trailing(&self, word: &str) -> Blocked {
        if self.spec.body.is_empty() {
            let flags: Vec<&str> = self.spec.flags.iter().map(|f| f.names[0]).collect();
            return Blocked::new(if flags.is_empty() {
                format!("`{}` takes no arguments", self.prog())
            } else {
                format!(
                    "`{}` takes no arguments except the flags {}",
                    self.prog(),
                    flags.join(", ")
                )
            });
        }
        let mut msg = format!("unexpected argument `{word}` for `{}`", self.context);
        if !self.expected.is_empty() {
            msg.push_str(&format!("; expected {}", set_desc(&self.expected)));
        } else if let Some(max) = self.full {
            msg.push_str(&format!(" (at most {max} allowed)"));
        }
        Blocked::new(msg)
    }
}
