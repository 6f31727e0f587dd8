//! The secrets a run sends (the SSH password, a bearer token, private keys, passphrases and key
//! paths in a scenario's arguments), masked wherever the agent writes or serves text that
//! could repeat them: a failure's message (a server or sshd that echoes what it was sent, a
//! command line that names a key file), the MCP URL's credentials, a scrape error.
//!
//! Masking at those few sources, rather than in each report or page, keeps every consumer
//! clean at once: the records, `summary.json`, the reports and the live dashboard (which must
//! equal `report.html` at the end) all carry the masked text. The cost is paid only on
//! failures: a successful call's record has no message to mask.

use std::borrow::Cow;

use crate::engine::RunSettings;
use crate::scenario::Scenario;

/// What a masked secret reads as.
pub const MASK: &str = "********";

/// Shorter values are not masked: a two-letter password would blank every pair of those
/// letters in every message. Lab and real credentials are longer.
const MIN_LEN: usize = 3;

/// Argument and variable names whose values are secrets (matched as substrings, any case).
const SECRET_NAMES: [&str; 8] = [
    "password",
    "passphrase",
    "private_key",
    "key_path",
    "key_file",
    "identity",
    "token",
    "secret",
];

fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| name.contains(s))
}

/// The values to mask in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

impl Secrets {
    /// The secrets of a run of `scenario` with `settings`.
    pub fn of(settings: &RunSettings, scenario: &Scenario) -> Self {
        let mut values = vec![settings.password.clone()];
        values.extend(settings.bearer.clone());
        for (name, list) in &scenario.vars {
            if secret_name(name) {
                values.extend(list.iter().cloned());
            }
        }
        for op in &scenario.ops {
            for (key, v) in &op.args {
                collect(key, v, scenario, &mut values);
            }
        }
        Self::new(values)
    }

    /// These values (the short and repeated ones dropped).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.chars().count() >= MIN_LEN)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), MASK));
            }
        }
        out
    }

    /// A URL with its credentials (`user:password@`) masked, and every secret.
    pub fn mask_url(&self, url: &str) -> String {
        let masked = match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                match rest[..authority_end].rfind('@') {
                    Some(at) => format!("{scheme}://{MASK}@{}", &rest[at + 1..]),
                    None => url.to_owned(),
                }
            }
            None => url.to_owned(),
        };
        self.mask(&masked).into_owned()
    }
}

/// The secrets in an op's argument `key = v`: a literal under a secret name, or every entry of
/// the `[vars]` list a `{{pick NAME}}` under a secret name draws from.
fn collect(key: &str, v: &toml::Value, scenario: &Scenario, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) if secret_name(key) => {
            if let Some(list) = s
                .trim()
                .strip_prefix("{{")
                .and_then(|s| s.strip_suffix("}}"))
                .and_then(|p| p.trim().strip_prefix("pick "))
            {
                out.extend(
                    scenario
                        .vars
                        .get(list.trim())
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
            } else if !s.contains("{{") {
                out.push(s.clone());
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                collect(k, v, scenario, out);
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                collect(key, v, scenario, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_secret_and_url_credentials() {
        let s = Secrets::new(["hunter22".to_owned(), "ab".into(), "hunter2".into()]);
        assert_eq!(
            s.mask("auth failed with hunter22 and hunter2"),
            "auth failed with ******** and ********"
        );
        assert_eq!(s.mask("ab stays: too short"), "ab stays: too short");
        assert!(matches!(s.mask("nothing"), Cow::Borrowed(_)));
        assert_eq!(
            s.mask_url("http://me:hunter22@h:1/mcp?x=1"),
            "http://********@h:1/mcp?x=1"
        );
        assert_eq!(s.mask_url("http://h:1/a@b"), "http://h:1/a@b");
    }

    #[test]
    fn scenario_arguments_under_secret_names_are_secrets() {
        let scenario = Scenario::parse(
            r#"
name = "keys"
duration_s = 1
[vars]
keys = ["/root/.ssh/id_one", "/root/.ssh/id_two"]
commands = ["hostname"]
[[op]]
tool = "ssh_connect"
args = { host = "h", user = "u", private_key_path = "{{pick keys}}", passphrase = "open sesame", password = "{{password}}" }
[[op]]
tool = "ssh_run_command"
args = { command = "{{pick commands}}", nested = { api_token = "tok-123" } }
"#,
            "keys.toml",
        )
        .expect("scenario");
        let settings = crate::engine::test_settings("pw-secret", Some("bearer-xyz"));
        let s = Secrets::of(&settings, &scenario);
        let text =
            "pw-secret bearer-xyz /root/.ssh/id_one /root/.ssh/id_two open sesame tok-123 hostname";
        assert_eq!(
            s.mask(text),
            "******** ******** ******** ******** ******** ******** hostname"
        );
    }
}
