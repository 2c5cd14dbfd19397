//! `--config run.toml` for every command that runs models: the file's keys are the command's
//! own flags (kebab-case names), so the flag definitions are the one table both read from.
//! The file is expanded into the flags it stands for, placed before the command line's own
//! flags, which win (the commands set `args_override_self`). Relative paths resolve against
//! the file's folder. Each key is checked by the same parser as its flag, and an error names
//! the file, the line and the key.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ArgAction;
use qgate_core::policy::toml_kind;

/// Commands that take `--config`.
const COMMANDS: &[&str] = &["compare", "check", "bench", "sensitivity"];

/// Value names of flags that take a path (resolved against the config's folder).
const PATHS: &[&str] = &["PATH", "FILE", "DIR"];

/// `argv` with the run config's flags inserted after the command name; unchanged when the
/// command takes no config or none is named.
pub(crate) fn expand(argv: &[OsString], cli: &clap::Command) -> Result<Vec<OsString>> {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(name) = args.get(1).filter(|a| COMMANDS.contains(&a.as_str())) else {
        return Ok(argv.to_vec());
    };
    let Some(path) = last_value(&args[2..], "--config") else {
        return Ok(argv.to_vec());
    };
    let Some(cmd) = cli.find_subcommand(name) else {
        return Ok(argv.to_vec());
    };
    let path = Path::new(&path);
    let text = crate::cli::read_text(path, "config")?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "config {}: {}",
            path.display(),
            qgate_core::policy::toml_error(&text, &e)
        )
    })?;
    let file = RunConfig {
        text: &text,
        base: path.parent().unwrap_or(Path::new("")),
        cli,
        cmd,
        given: &args[2..],
    };
    let mut flags = Vec::new();
    for (key, value) in &table {
        if let Some(others) = other_commands_flag(cli, name, key) {
            // One run config may serve several commands (`compare` and `bench` on the same
            // pair): another command's option is skipped, and said so.
            eprintln!(
                "qgate: note: config {}: `{key}` is an option of `qgate {others}`, not of `qgate {name}`; ignored",
                path.display()
            );
            continue;
        }
        let what = || {
            let name = if value.is_table() {
                format!("table [{key}]")
            } else {
                format!("key `{key}`")
            };
            format!("config {}: {}{name}", path.display(), file.line(key))
        };
        let these = file.flags(key, value).with_context(what)?;
        file.check(&these).with_context(what)?;
        flags.extend(these);
    }
    let mut out: Vec<OsString> = argv[..2].to_vec();
    out.extend(flags.into_iter().map(OsString::from));
    out.extend(argv[2..].iter().cloned());
    Ok(out)
}

/// The other commands (`compare, check`) that have the flag `key` when `name` has not.
fn other_commands_flag(cli: &clap::Command, name: &str, key: &str) -> Option<String> {
    let has = |c: &clap::Command| {
        c.get_arguments()
            .any(|a| a.get_long() == Some(key) && !a.is_hide_set())
    };
    // `[image]` stands for the `--image-…` flags every data-reading command has.
    if key == "image" || cli.find_subcommand(name).is_some_and(has) {
        return None;
    }
    let others: Vec<&str> = COMMANDS
        .iter()
        .copied()
        .filter(|c| *c != name && cli.find_subcommand(c).is_some_and(has))
        .collect();
    (!others.is_empty()).then(|| others.join(", "))
}

/// The value of the last `--flag V` or `--flag=V` in `args`, before a `--` (after it every
/// token is a positional value).
pub(crate) fn last_value(args: &[String], flag: &str) -> Option<String> {
    let args = flags_part(args);
    args.iter().enumerate().rev().find_map(|(i, a)| {
        a.strip_prefix(&format!("{flag}="))
            .map(str::to_string)
            .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
    })
}

/// `args` up to a `--`.
fn flags_part(args: &[String]) -> &[String] {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    &args[..end]
}

struct RunConfig<'a> {
    text: &'a str,
    base: &'a Path,
    cli: &'a clap::Command,
    cmd: &'a clap::Command,
    /// The command line's own flags (after the command name).
    given: &'a [String],
}

impl RunConfig<'_> {
    /// `line N, ` of `key` in the file.
    fn line(&self, key: &str) -> String {
        qgate_core::policy::key_line(self.text, key)
    }

    /// The flags that `key = value` stands for.
    fn flags(&self, key: &str, value: &toml::Value) -> Result<Vec<String>> {
        match key {
            "config" => bail!("a run config cannot name another run config"),
            "baseline" => Ok(vec![format!("--{key}={}", self.side(value)?)]),
            // One candidate, or a list of them (`compare` and `check` take several).
            "candidate" => match value {
                toml::Value::Array(items) => self.repeated(
                    "candidate",
                    items.iter().map(|v| self.side(v)).collect::<Result<_>>()?,
                ),
                v => self.repeated("candidate", vec![self.side(v)?]),
            },
            "policy" => match value {
                toml::Value::Table(t) => Ok(vec![format!("--policy-table={t}")]),
                v => self.plain("policy", v),
            },
            "image" => self.image(value),
            "input" => match value {
                toml::Value::Table(t) => self.repeated(
                    "input",
                    t.iter()
                        .map(|(name, k)| match k {
                            toml::Value::String(k) => Ok(format!("{name}={k}")),
                            other => bail!(
                                "[input] `{name}`: expected the name of a data array, got {}",
                                toml_kind(other)
                            ),
                        })
                        .collect::<Result<_>>()?,
                ),
                v => self.plain("input", v),
            },
            _ => self.plain(key, value),
        }
    }

    /// The flag named `key` (visible, long), or an error listing what the command takes.
    fn arg(&self, key: &str) -> Result<&clap::Arg> {
        if let Some(a) = self
            .cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key) && !a.is_hide_set())
        {
            return Ok(a);
        }
        // The flag's name when only the spelling differs (snake_case), this command's or
        // another's.
        let kebab = key.replace('_', "-");
        let name = self.cmd.get_name();
        let ours = self
            .cmd
            .get_arguments()
            .any(|a| a.get_long() == Some(kebab.as_str()) && !a.is_hide_set());
        let hint = if kebab == key {
            String::new()
        } else if ours {
            format!(" (did you mean `{kebab}`? run configs use the flags' names)")
        } else if let Some(others) = other_commands_flag(self.cli, name, &kebab) {
            format!(
                " (did you mean `{kebab}`, an option of `qgate {others}`? run configs use the flags' names)"
            )
        } else {
            String::new()
        };
        bail!(
            "unknown key{hint}; a run config of `qgate {name}` takes its flags' names, as `qgate {name} --help` lists them"
        )
    }

    /// `--key value` for a flag of the command.
    fn plain(&self, key: &str, value: &toml::Value) -> Result<Vec<String>> {
        let arg = self.arg(key)?;
        let flag = format!("--{key}");
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
                Ok(if *b { vec![flag] } else { Vec::new() })
            }
            (ArgAction::SetTrue, v) => bail!("expected true or false, got {}", toml_kind(v)),
            (ArgAction::Append, toml::Value::Array(items)) => self.repeated(
                key,
                items
                    .iter()
                    .map(|v| self.scalar(arg, v))
                    .collect::<Result<_>>()?,
            ),
            (ArgAction::Append, v) => self.repeated(key, vec![self.scalar(arg, v)?]),
            // One `--key=value` token: a value may start with `-` (`image-mean = [-0.5]`).
            (_, v) => Ok(vec![format!("{flag}={}", self.scalar(arg, v)?)]),
        }
    }

    /// `--key v` once per value, unless the command line gives `--key` itself (then it
    /// replaces the file's list rather than adding to it).
    fn repeated(&self, key: &str, values: Vec<String>) -> Result<Vec<String>> {
        let flag = format!("--{key}");
        if flags_part(self.given)
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        {
            return Ok(Vec::new());
        }
        // One `--key=value` token each: a value may start with `-`.
        Ok(values.into_iter().map(|v| format!("{flag}={v}")).collect())
    }

    /// A value as its flag's text: numbers as written, lists comma-joined, paths resolved.
    fn scalar(&self, arg: &clap::Arg, v: &toml::Value) -> Result<String> {
        let text = match v {
            toml::Value::String(s) if s.is_empty() => {
                bail!("is empty: expected a value (leave the key out for the default)")
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|x| match x {
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    toml::Value::Float(f) => Ok(f.to_string()),
                    toml::Value::String(s) => Ok(s.clone()),
                    other => bail!(
                        "expected a list of numbers or names, got {} in it",
                        toml_kind(other)
                    ),
                })
                .collect::<Result<Vec<_>>>()?
                .join(","),
            other => bail!("expected a value, got {}", toml_kind(other)),
        };
        let is_path = arg
            .get_value_names()
            .is_some_and(|n| n.iter().any(|n| PATHS.contains(&n.as_str())));
        Ok(
            if is_path && !text.is_empty() && Path::new(&text).is_relative() {
                self.base.join(&text).display().to_string()
            } else {
                text
            },
        )
    }

    /// A side: a spec string, or `{ spec, device, threads }`; relative paths resolved.
    fn side(&self, v: &toml::Value) -> Result<String> {
        const EXPECTED: &str =
            "expected a model spec (\"model.onnx\", \"ort:model.onnx\", …) or a table with `spec` and optional `device`, `threads`";
        let t = match v {
            toml::Value::String(s) => return Ok(self.spec(s)),
            toml::Value::Table(t) => t,
            other => bail!("got {}; {EXPECTED}", toml_kind(other)),
        };
        let mut spec = None;
        let mut opts = Vec::new();
        for (k, x) in t {
            match (k.as_str(), x) {
                ("spec", toml::Value::String(s)) => spec = Some(self.spec(s)),
                ("device", toml::Value::String(d)) => opts.push(format!("device={d}")),
                ("threads", toml::Value::Integer(n)) if *n >= 1 => {
                    opts.push(format!("threads={n}"))
                }
                ("spec" | "device", other) => {
                    bail!("`{k}`: expected a string, got {}", toml_kind(other))
                }
                ("threads", other) => bail!(
                    "`threads`: expected a whole number ≥ 1, got {}",
                    toml::Value::to_string(other)
                ),
                (other, _) => bail!("unknown key `{other}`; {EXPECTED}"),
            }
        }
        let spec = spec.with_context(|| format!("the table has no `spec`; {EXPECTED}"))?;
        Ok(if opts.is_empty() {
            spec
        } else {
            let sep = if spec.contains('?') { '&' } else { '?' };
            format!("{spec}{sep}{}", opts.join("&"))
        })
    }

    /// A model spec with a relative file path resolved against the config's folder.
    fn spec(&self, spec: &str) -> String {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return spec.to_string();
        }
        let (prefix, rest) = ["tract:", "ort:", "preds:"]
            .iter()
            .find_map(|p| spec.strip_prefix(p).map(|r| (*p, r)))
            .unwrap_or(("", spec));
        if Path::new(rest).is_relative() {
            format!("{prefix}{}", self.base.join(rest).display())
        } else {
            spec.to_string()
        }
    }

    /// `[image]`: `size = [w, h]`, `scale`, `mean`, `std`, `layout`, `color` → `--image-…`.
    fn image(&self, v: &toml::Value) -> Result<Vec<String>> {
        let toml::Value::Table(t) = v else {
            bail!("expected a table ([image]), got {}", toml_kind(v));
        };
        let mut flags = Vec::new();
        for (k, x) in t {
            let value = match (k.as_str(), x) {
                ("size", toml::Value::Array(wh)) => match wh.as_slice() {
                    [toml::Value::Integer(w), toml::Value::Integer(h)] if *w >= 1 && *h >= 1 => {
                        format!("{w}x{h}")
                    }
                    _ => bail!(
                        "[image] `size`: expected [width, height] in whole numbers ≥ 1, e.g. [224, 224]"
                    ),
                },
                ("size", other) => bail!(
                    "[image] `size`: expected [width, height], e.g. [224, 224], got {}",
                    toml_kind(other)
                ),
                ("scale" | "mean" | "std" | "layout" | "color", x) => {
                    self.scalar(self.arg(&format!("image-{k}"))?, x)?
                }
                (other, _) => bail!(
                    "[image]: unknown key `{other}`; expected size, scale, mean, std, layout, color"
                ),
            };
            flags.push(format!("--image-{k}={value}"));
        }
        Ok(flags)
    }

    /// Parses `flags` alone with the command's own parsers, so a bad value is reported as
    /// the file's (`config run.toml: line 3, `batch-size`: invalid value …`).
    fn check(&self, flags: &[String]) -> Result<()> {
        if flags.is_empty() {
            return Ok(());
        }
        let mut cmd = self.cmd.clone().no_binary_name(true);
        match cmd.try_get_matches_from_mut(flags) {
            Ok(_) => Ok(()),
            Err(e) => {
                let text = e.to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_string();
                bail!("{first}")
            }
        }
    }
}
