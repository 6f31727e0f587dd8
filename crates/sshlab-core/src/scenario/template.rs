//! Argument templates: string values in an op's `args` may contain placeholders.
//!
//! `{{target_host}}`, `{{target_port}}`, `{{user}}`, `{{password}}`, `{{session}}` (the
//! worker's handle), `{{worker}}` (its index) and `{{pick NAME}}` (the next entry of the
//! scenario's `vars.NAME`, round-robin per worker). A value that is exactly one placeholder
//! takes the placeholder's type (`"{{target_port}}"` becomes the integer 2222); otherwise
//! placeholders are interpolated into the string. Non-string values pass through.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

const SIMPLE: &[&str] = &[
    "target_host",
    "target_port",
    "user",
    "password",
    "session",
    "worker",
];

/// Values for one call.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// SSH target host.
    pub target_host: &'a str,
    /// SSH target port.
    pub target_port: u16,
    /// SSH user.
    pub user: &'a str,
    /// SSH password.
    pub password: &'a str,
    /// The handle, when the op needs one.
    pub session: Option<&'a str>,
    /// Worker index.
    pub worker: usize,
    /// Scenario vars.
    pub vars: &'a BTreeMap<String, Vec<String>>,
    /// Round-robin counter for `pick`.
    pub counter: u64,
}

fn placeholders(s: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(open) = s[rest..].find("{{") {
        let start = rest + open;
        let Some(close) = s[start + 2..].find("}}") else {
            break;
        };
        let end = start + 2 + close + 2;
        out.push((start, end, s[start + 2..end - 2].trim()));
        rest = end;
    }
    out
}

/// Check every placeholder of `args` is known (at load time, before any run).
pub fn check(args: &toml::Table, vars: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
    fn walk(v: &toml::Value, vars: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
        match v {
            toml::Value::String(s) => {
                for (_, _, name) in placeholders(s) {
                    if SIMPLE.contains(&name) {
                        continue;
                    }
                    match name.strip_prefix("pick ") {
                        Some(list) if vars.get(list.trim()).is_some_and(|l| !l.is_empty()) => {}
                        Some(list) => {
                            return Err(format!(
                                "`{{{{pick {}}}}}` names no non-empty list in [vars]",
                                list.trim()
                            ));
                        }
                        None => return Err(format!("unknown placeholder `{{{{{name}}}}}`")),
                    }
                }
                Ok(())
            }
            toml::Value::Array(a) => a.iter().try_for_each(|v| walk(v, vars)),
            toml::Value::Table(t) => t.values().try_for_each(|v| walk(v, vars)),
            _ => Ok(()),
        }
    }
    args.values().try_for_each(|v| walk(v, vars))
}

fn value_of(name: &str, ctx: &Context<'_>) -> Value {
    match name {
        "target_host" => Value::from(ctx.target_host),
        "target_port" => Value::from(ctx.target_port),
        "user" => Value::from(ctx.user),
        "password" => Value::from(ctx.password),
        "session" => ctx.session.map_or(Value::Null, Value::from),
        "worker" => Value::from(ctx.worker),
        other => match other
            .strip_prefix("pick ")
            .and_then(|l| ctx.vars.get(l.trim()))
        {
            Some(list) if !list.is_empty() => {
                Value::from(list[(ctx.counter % list.len() as u64) as usize].as_str())
            }
            _ => Value::Null,
        },
    }
}

fn render_value(v: &toml::Value, ctx: &Context<'_>) -> Value {
    match v {
        toml::Value::String(s) => {
            let ph = placeholders(s);
            if let [(0, end, name)] = ph.as_slice()
                && *end == s.len()
            {
                return value_of(name, ctx);
            }
            let mut out = String::new();
            let mut last = 0;
            for (start, end, name) in ph {
                out.push_str(&s[last..start]);
                match value_of(name, ctx) {
                    Value::String(v) => out.push_str(&v),
                    Value::Null => {}
                    v => out.push_str(&v.to_string()),
                }
                last = end;
            }
            out.push_str(&s[last..]);
            Value::String(out)
        }
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(|v| render_value(v, ctx)).collect()),
        toml::Value::Table(t) => render(t, ctx),
    }
}

/// Render an op's arguments.
pub fn render(args: &toml::Table, ctx: &Context<'_>) -> Value {
    let mut m = Map::new();
    for (k, v) in args {
        m.insert(k.clone(), render_value(v, ctx));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_placeholders_keep_their_type_and_picks_rotate() {
        let vars = BTreeMap::from([("c".to_owned(), vec!["a".to_owned(), "b".to_owned()])]);
        let args: toml::Table = toml::from_str(
            "port='{{target_port}}'\nhost='{{target_host}}'\nsid='{{session}}'\ncmd='{{pick c}}'\nlabel='w{{worker}}-{{user}}'\nflag=true",
        )
        .expect("toml");
        check(&args, &vars).expect("known placeholders");
        let mut ctx = Context {
            target_host: "10.178.0.20",
            target_port: 2322,
            user: "testuser",
            password: "p",
            session: Some("ssh_x"),
            worker: 4,
            vars: &vars,
            counter: 0,
        };
        let v = render(&args, &ctx);
        assert_eq!(
            v,
            json!({"port": 2322, "host": "10.178.0.20", "sid": "ssh_x", "cmd": "a", "label": "w4-testuser", "flag": true})
        );
        ctx.counter = 1;
        assert_eq!(render(&args, &ctx)["cmd"], "b");
    }

    #[test]
    fn unknown_placeholders_are_refused() {
        let vars = BTreeMap::new();
        let args: toml::Table = toml::from_str("a='{{nope}}'").expect("toml");
        assert!(check(&args, &vars).expect_err("unknown").contains("nope"));
        let args: toml::Table = toml::from_str("a='{{pick x}}'").expect("toml");
        assert!(check(&args, &vars).is_err());
    }
}
