//! The config file: a TOML file of the flags a service would set, so that a systemd
//! unit's command line stays `mqft receive --config /etc/mqft/mqft.toml`.
//!
//! Its keys are the long flag names with `_` for `-` (`password_file`, `max_size`,
//! `exec_jobs`). Keys at the top level apply to both `send` and `receive` and must
//! be flags both have (the broker's); `[send]` and `[receive]` hold the others:
//!
//! ```toml
//! broker = "mqtt://broker.local"
//! username = "cams"
//! password_file = "/etc/mqft/password"
//! prefix = "site/cams"
//!
//! [receive]
//! out = "/srv/photos"
//! exec = "/usr/local/bin/on-photo {}"
//! ```
//!
//! Precedence: flags, then environment variables, then the file, then the defaults.
//! It works by adding `--key=value` to the command line for each key whose flag was
//! neither given nor set through its environment variable, so a value in the file
//! is parsed and checked exactly as the flag is. An unknown key is a usage error
//! (exit 2) that names it: a typo must not silently fall back to a default.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory};

use crate::args::{usage, Cli, UsageError};

/// The subcommands the file has sections for.
const SECTIONS: [&str; 2] = ["send", "receive"];
/// Subcommands that take the top-level keys they have (the broker's), without a
/// section and without narrowing what the top level may hold: `mqft status`.
const TOP_LEVEL_ONLY: [&str; 1] = ["status"];

/// The file used when there is no `--config` and no `MQFT_CONFIG`: the user's, then
/// the system's, whichever exists first.
pub fn default_path() -> Option<PathBuf> {
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("mqft").join("mqft.toml"));
    user.into_iter().chain([PathBuf::from("/etc/mqft/mqft.toml")]).find(|p| p.is_file())
}

/// `raw` (the process's arguments) with the config file's settings added as flags.
///
/// Arguments that do not parse are returned as they are: the real parse reports
/// them, with clap's messages.
pub fn apply(raw: Vec<OsString>) -> Result<Vec<OsString>, UsageError> {
    let mut cmd = Cli::command();
    cmd.build();
    let Ok(matches) = cmd.clone().try_get_matches_from(&raw) else { return Ok(raw) };
    let Some((name, sub)) = matches.subcommand() else { return Ok(raw) };
    let (path, explicit) = match matches.get_one::<PathBuf>("config") {
        Some(p) => (p.clone(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(raw),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        // A default that vanished between the check and the read is no error.
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(raw),
        Err(e) => return Err(usage(format!("cannot read config file {}: {e}", path.display()))),
    };
    let table: toml::Table = text.parse().map_err(|e| usage(format!("config file {}: {e}", path.display())))?;
    let flags = Flags::of(&cmd);
    let settings = flags.settings(&table).map_err(|e| usage(format!("config file {}: {e}", path.display())))?;
    if settings.iter().any(|(section, key, _)| key == "password" && section_applies(section, name)) {
        warn_if_readable(&path);
    }
    let mut extra = Vec::new();
    let Some(args) = flags.by_command.get(name) else { return Ok(raw) };
    for (section, key, value) in &settings {
        if !section_applies(section, name) {
            continue;
        }
        // The section's value replaces the top level's, also for a flag that takes
        // several values (`prefix`), which would otherwise add both.
        if section.is_empty() && settings.iter().any(|(sec, k, _)| sec == name && k == key) {
            continue;
        }
        // Looked up when the settings were checked.
        let Some(arg) = args.get(key.as_str()) else { continue };
        // Nor when a flag given conflicts with it: `--json` on the command line
        // beats `quiet = true` in the file, rather than clashing with it.
        let conflicts = cmd.find_subcommand(name).map(|c| c.get_arg_conflicts_with(arg)).unwrap_or_default();
        if given(sub, arg) || conflicts.iter().any(|c| given(sub, c)) || given_conflicting(&cmd, name, sub, arg) {
            continue;
        }
        extra.extend(as_flags(arg, key, value).map_err(|e| usage(format!("config file {}: {e}", path.display())))?);
    }
    Ok(insert(raw, extra))
}

/// Whether a flag given declares a conflict with `arg` (clap lists a conflict
/// only on the flag that declares it): `--stdout` on the command line beats
/// `out = "/srv"` in the file.
fn given_conflicting(cmd: &clap::Command, name: &str, sub: &ArgMatches, arg: &Arg) -> bool {
    let Some(c) = cmd.find_subcommand(name) else { return false };
    c.get_arguments()
        .filter(|g| given(sub, g))
        .any(|g| c.get_arg_conflicts_with(g).iter().any(|x| x.get_id() == arg.get_id()))
}

/// Whether a key in `section` (empty: the top level) is for `command`.
fn section_applies(section: &str, command: &str) -> bool {
    section.is_empty() || section == command
}

/// Whether the flag was set on the command line or through its environment variable.
fn given(matches: &ArgMatches, arg: &Arg) -> bool {
    matches!(matches.value_source(arg.get_id().as_str()), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
}

/// `extra` goes before a `--` (after it, flags would be file names), else at the end.
fn insert(mut raw: Vec<OsString>, extra: Vec<OsString>) -> Vec<OsString> {
    let at = raw.iter().position(|a| a == "--").unwrap_or(raw.len());
    raw.splice(at..at, extra);
    raw
}

/// The flags a config file may set, per subcommand, by key.
struct Flags {
    by_command: BTreeMap<String, BTreeMap<String, Arg>>,
}

impl Flags {
    fn of(cmd: &clap::Command) -> Flags {
        let mut by_command = BTreeMap::new();
        for name in SECTIONS.iter().chain(&TOP_LEVEL_ONLY) {
            let Some(sub) = cmd.find_subcommand(name) else { continue };
            let args = sub
                .get_arguments()
                .filter(|a| !a.is_positional() && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
                // The file cannot name another file.
                .filter(|a| a.get_id() != "config")
                .filter_map(|a| a.get_long().map(|l| (l.replace('-', "_"), a.clone())))
                .collect();
            by_command.insert((*name).to_owned(), args);
        }
        Flags { by_command }
    }

    /// Every (section, key, value) of the file, each key checked.
    fn settings(&self, table: &toml::Table) -> Result<Vec<(String, String, toml::Value)>, String> {
        let mut out = Vec::new();
        for (key, value) in table {
            let section = self.by_command.get(key).filter(|_| SECTIONS.contains(&key.as_str()));
            if let (Some(args), toml::Value::Table(inner)) = (section, value) {
                for (k, v) in inner {
                    if !args.contains_key(k) {
                        return Err(format!("unknown key `{k}` in [{key}]"));
                    }
                    out.push((key.clone(), k.clone(), v.clone()));
                }
                continue;
            }
            // At the top level: a flag of every subcommand.
            let sections = || self.by_command.iter().filter(|(c, _)| SECTIONS.contains(&c.as_str()));
            if !sections().all(|(_, args)| args.contains_key(key)) {
                let only = sections().find(|(_, args)| args.contains_key(key)).map(|(c, _)| c);
                return Err(match only {
                    Some(c) => format!("key `{key}` is for `mqft {c}` only: put it under [{c}]"),
                    None => format!("unknown key `{key}`"),
                });
            }
            out.push((String::new(), key.clone(), value.clone()));
        }
        // A section's value overrides the top level's: it comes later.
        out.sort_by_key(|(section, _, _)| !section.is_empty());
        Ok(out)
    }
}

/// The command-line words for `key = value`.
fn as_flags(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = format!("--{}", arg.get_long().unwrap_or(key));
    match arg.get_action() {
        ArgAction::SetTrue => match value {
            toml::Value::Boolean(true) => Ok(vec![long.into()]),
            toml::Value::Boolean(false) => Ok(vec![]),
            _ => Err(format!("`{key}` is true or false")),
        },
        ArgAction::Count => match value {
            toml::Value::Integer(n) if (0..=8).contains(n) => Ok((0..*n).map(|_| OsString::from(&long)).collect()),
            _ => Err(format!("`{key}` is a count from 0 to 8")),
        },
        ArgAction::Append => {
            let values = match value {
                toml::Value::Array(a) => a.iter().map(scalar).collect::<Result<Vec<_>, _>>(),
                other => scalar(other).map(|v| vec![v]),
            }
            .map_err(|e| format!("`{key}`: {e}"))?;
            Ok(values.into_iter().map(|v| format!("{long}={v}").into()).collect())
        }
        _ => {
            let v = scalar(value).map_err(|e| format!("`{key}`: {e}"))?;
            Ok(vec![format!("{long}={v}").into()])
        }
    }
}

/// A single TOML value as the flag's text.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("a string, number or boolean".to_owned()),
    }
}

/// A password in a file others can read is no secret: say so (but go on, as ssh
/// does not for keys, because refusing would stop a running service on upgrade).
fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            eprintln!(
                "mqft: warning: {} holds a password and anyone on this machine can read it: \
                 chmod o-r it, or use password_file",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        let mut cmd = Cli::command();
        cmd.build();
        Flags::of(&cmd)
    }

    #[test]
    fn keys_are_checked_and_sections_override_the_top_level() {
        let table: toml::Table = "prefix = \"a\"\n[receive]\nprefix = \"b\"\nmax_size = \"1m\"\n".parse().unwrap();
        let s = flags().settings(&table).unwrap();
        assert_eq!(s.last().map(|(sec, k, _)| (sec.as_str(), k.as_str())), Some(("receive", "prefix")));
        let bad: toml::Table = "[receive]\nmax_sise = 1\n".parse().unwrap();
        assert!(flags().settings(&bad).unwrap_err().contains("max_sise"));
        let wrong_place: toml::Table = "out = \"/srv\"\n".parse().unwrap();
        assert!(flags().settings(&wrong_place).unwrap_err().contains("[receive]"));
    }

    /// `prefix` repeats for a receiver: a list in the file gives each, and a
    /// section's list replaces the top level's rather than adding to it.
    #[test]
    fn a_list_of_prefixes_and_a_section_that_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqft.toml");
        std::fs::write(&path, "prefix = \"top\"\n[receive]\nprefix = [\"site1/cams\", \"site/+/cams\"]\n").unwrap();
        let raw: Vec<OsString> =
            ["mqft", "receive", "--config"].map(OsString::from).into_iter().chain([path.into()]).collect();
        let args = apply(raw).unwrap();
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(
            shown.contains(&"--prefix=site1/cams".to_owned()) && shown.contains(&"--prefix=site/+/cams".to_owned()),
            "{shown:?}"
        );
        assert!(!shown.iter().any(|a| a.contains("top")), "{shown:?}");
    }

    /// A service's `out` and `exec` do not clash with `receive --once --stdout`.
    #[test]
    fn a_flag_given_beats_the_keys_it_conflicts_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqft.toml");
        std::fs::write(&path, "[receive]\nout = \"/srv/in\"\nexec = \"true {}\"\nmax_size = \"1m\"\n").unwrap();
        let raw: Vec<OsString> = ["mqft", "receive", "--once", "--stdout", "--config"]
            .map(OsString::from)
            .into_iter()
            .chain([path.into()])
            .collect();
        let args = apply(raw).unwrap();
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!shown.iter().any(|a| a.starts_with("--out") || a.starts_with("--exec")), "{shown:?}");
        assert!(shown.contains(&"--max-size=1m".to_owned()), "{shown:?}");
        assert!(<Cli as clap::Parser>::try_parse_from(args).is_ok());
    }

    #[test]
    fn names_from_many_senders_are_settable() {
        let table: toml::Table = "[send]
from = \"cam7\"
[receive]
on_conflict = \"skip\"
out = \"/srv/in/{sender}\"
"
        .parse()
        .unwrap();
        let mut keys: Vec<_> = flags().settings(&table).unwrap().into_iter().map(|(_, k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, ["from", "on_conflict", "out"]);
    }
}
