use super::*;
use std::collections::HashMap;

fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::load(&move |k| map.get(k).cloned(), None)
}

const KEY: &str = crate::testing::COOKIE_KEY; // 32 bytes
const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn empty_environment_is_demo() {
    let s = load(&[]).unwrap();
    assert!(s.is_demo());
    assert_eq!(s.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(s.flow.format, Format::Jwt);
    assert_eq!(s.policy.rules, Some(RulesSource::Demo));
    assert_eq!(s.demo_defaults.len(), 4);
}

#[test]
fn demo_refused_off_loopback() {
    let e = load(&[("CAPSIGN_LISTEN", "0.0.0.0:3000")]).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_IDENTITY");
}

#[test]
fn every_setting_has_a_distinct_name_and_a_doc() {
    let mut names: Vec<&str> = TABLE.iter().map(|d| d.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), TABLE.len());
    for d in TABLE {
        assert!(!d.doc.is_empty(), "{}", d.name);
        assert!(d.name == "ABLY_API_KEY" || d.name.starts_with("CAPSIGN_"));
    }
    let help = help();
    for d in TABLE {
        assert!(help.contains(d.name), "{} missing from --help", d.name);
    }
}

/// An empty variable is an invalid value (naming the variable), never "unset".
#[test]
fn empty_values_are_invalid_not_unset() {
    for d in TABLE {
        let e = load(&[(d.name, "")]).unwrap_err();
        assert_eq!(e.setting, d.name);
        assert!(e.problem.contains("empty"), "{e}");
    }
    let e = load(&[("CAPSIGN_SESSION_SECRET", "  ")]).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_SESSION_SECRET");
}

macro_rules! bad_settings {
    ($($case:ident: [$(($k:literal, $v:expr)),*] => $setting:literal;)*) => {$(
        #[test]
        fn $case() {
            let e = load(&[$(($k, $v)),*]).unwrap_err();
            assert_eq!(e.setting, $setting, "{e}");
        }
    )*};
}

bad_settings! {
    bad_ably_key: [("ABLY_API_KEY", "nope")] => "ABLY_API_KEY";
    bad_listen: [("CAPSIGN_LISTEN", "here")] => "CAPSIGN_LISTEN";
    short_cookie_key: [("CAPSIGN_COOKIE_KEY", "c2hvcnQ=")] => "CAPSIGN_COOKIE_KEY";
    cookie_key_not_base64: [("CAPSIGN_COOKIE_KEY", "%%%")] => "CAPSIGN_COOKIE_KEY";
    bad_format: [("CAPSIGN_FORMAT", "xml")] => "CAPSIGN_FORMAT";
    bad_ttl: [("CAPSIGN_TTL", "1 fortnight")] => "CAPSIGN_TTL";
    ttl_max_over_ably: [("CAPSIGN_TTL_MAX", "25h")] => "CAPSIGN_TTL_MAX";
    ttl_out_of_order: [("CAPSIGN_TTL", "30s")] => "CAPSIGN_TTL";
    bad_key_capability: [("CAPSIGN_KEY_CAPABILITY", "{\"a\":[]}")] => "CAPSIGN_KEY_CAPABILITY";
    short_session_secret: [("CAPSIGN_SESSION_SECRET", "short")] => "CAPSIGN_SESSION_SECRET";
    jwt_without_key: [("CAPSIGN_IDENTITY", "jwt")] => "CAPSIGN_IDENTITY";
    two_session_keys: [("CAPSIGN_SESSION_SECRET", SECRET),
        ("CAPSIGN_SESSION_PUBLIC_KEY", "/k.pem")] => "CAPSIGN_SESSION_SECRET";
    no_rules_in_production: [("CAPSIGN_SESSION_SECRET", SECRET)] => "CAPSIGN_RULES";
    header_without_proxies: [("CAPSIGN_IDENTITY", "header")] => "CAPSIGN_TRUSTED_PROXIES";
    regrant_after_max_age: [("CAPSIGN_REGRANT_AFTER", "2d")] => "CAPSIGN_REGRANT_AFTER";
    short_policy_secret: [("CAPSIGN_POLICY_SECRET", "short")] => "CAPSIGN_POLICY_SECRET";
    policy_url_not_http: [("CAPSIGN_POLICY_URL", "ftp://x")] => "CAPSIGN_POLICY_URL";
    cors_wildcard: [("CAPSIGN_CORS_ORIGINS", "*")] => "CAPSIGN_CORS_ORIGINS";
    header_timeout_zero: [("CAPSIGN_HEADER_TIMEOUT", "0s")] => "CAPSIGN_HEADER_TIMEOUT";
    // Issue 27 (5): upper bounds, and secrets that must differ.
    max_grants_unbounded: [("CAPSIGN_MAX_GRANTS", "1000000")] => "CAPSIGN_MAX_GRANTS";
    max_new_grants_unbounded: [("CAPSIGN_MAX_NEW_GRANTS", "1000000")] => "CAPSIGN_MAX_NEW_GRANTS";
    max_new_grants_over_max_grants: [("CAPSIGN_MAX_GRANTS", "50"),
        ("CAPSIGN_MAX_NEW_GRANTS", "100")] => "CAPSIGN_MAX_NEW_GRANTS";
    max_body_unbounded: [("CAPSIGN_MAX_BODY", "1000000000")] => "CAPSIGN_MAX_BODY";
    embedded_secret_is_the_session_secret: [("CAPSIGN_SESSION_SECRET", SECRET),
        ("CAPSIGN_EMBEDDED_SECRET", SECRET)] => "CAPSIGN_EMBEDDED_SECRET";
}

/// Issue 27 (5): plain http off loopback is named at start-up; loopback and https are not.
#[test]
fn plain_http_off_loopback_is_warned_about() {
    let with = |url: &str| {
        load(&[
            ABLY,
            COOKIE,
            RULES,
            SESSION,
            ("CAPSIGN_POLICY_URL", url),
            (
                "CAPSIGN_POLICY_SECRET",
                "a-policy-secret-of-at-least-32-characters",
            ),
        ])
        .unwrap()
        .warnings()
    };
    let w = with("http://policy.internal:8080/decide");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("CAPSIGN_POLICY_URL is plain http to policy.internal"),
        "{w:?}"
    );
    for quiet in [
        "https://policy.internal/decide",
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://[::1]:9/x",
    ] {
        assert!(with(quiet).is_empty(), "{quiet}: {:?}", with(quiet));
    }
}

/// Issue 27 (5): a misspelt variable is refused by name, with the setting it meant.
#[test]
fn unknown_capsign_variables_are_refused() {
    let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(refuse_unknown_variables(names(&["PATH", "CAPSIGN_DENY", "PORT"])).is_ok());
    let e = refuse_unknown_variables(names(&["HOME", "CAPSIGN_COOKIE_KYE"])).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_COOKIE_KYE");
    assert!(
        e.problem.contains("did you mean CAPSIGN_COOKIE_KEY?"),
        "{e}"
    );
    let e = refuse_unknown_variables(names(&["CAPSIGN_WHATEVER_ELSE"])).unwrap_err();
    assert!(!e.problem.contains("did you mean"), "{e}");
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
}

/// Issue 28 (3): every secret can be given as `NAME_FILE`, as container platforms mount
/// secrets; a trailing line break is not part of it; both forms at once, an unreadable or
/// empty file is refused by name; `check` says where it came from, never what it is.
#[test]
fn secrets_are_read_from_files() {
    let dir = std::env::temp_dir().join(format!("capsign-secret-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cookie = file("cookie", &format!("{KEY}\n"));
    let ably = file("ably", "app.key:from-a-file\r\n");
    let mut env = crate::testing::env(&[]);
    env.remove("CAPSIGN_COOKIE_KEY");
    env.remove("ABLY_API_KEY");
    env.insert("CAPSIGN_COOKIE_KEY_FILE".into(), cookie.clone());
    env.insert("ABLY_API_KEY_FILE".into(), ably);
    let get = |env: &std::collections::HashMap<String, String>| {
        let env = env.clone();
        move |k: &str| env.get(k).cloned()
    };
    let s = Settings::load(&get(&env), None).unwrap();
    assert_eq!(s.ably.key.name, "app.key");
    let shown = effective(&get(&env), None).unwrap();
    let cookie_shown = shown
        .iter()
        .find(|e| e.name == "CAPSIGN_COOKIE_KEY")
        .unwrap();
    assert_eq!(cookie_shown.value, "<redacted>");
    assert!(cookie_shown.source.contains(&cookie), "{cookie_shown:?}");
    assert!(refuse_unknown_variables(env.keys().cloned()).is_ok());

    let mut both = env.clone();
    both.insert("CAPSIGN_COOKIE_KEY".into(), KEY.into());
    let e = Settings::load(&get(&both), None).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_COOKIE_KEY_FILE");
    assert!(
        e.problem.contains("set together with CAPSIGN_COOKIE_KEY"),
        "{e}"
    );
    for (text, problem) in [
        (None, "cannot read"),
        (Some(""), "is empty"),
        (Some("\n"), "is empty"),
    ] {
        let mut bad = env.clone();
        let path = match text {
            Some(t) => file("bad", t),
            None => dir.join("missing").display().to_string(),
        };
        bad.insert("CAPSIGN_COOKIE_KEY_FILE".into(), path);
        let e = Settings::load(&get(&bad), None).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_COOKIE_KEY_FILE");
        assert!(e.problem.contains(problem), "{e}");
    }
    // Only secrets have a file form.
    let e = refuse_unknown_variables(["CAPSIGN_RULES_FILE".to_owned()]).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_RULES_FILE");
    let _ = std::fs::remove_dir_all(&dir);
}

const ABLY: (&str, &str) = ("ABLY_API_KEY", "app.key:secret");
const COOKIE: (&str, &str) = ("CAPSIGN_COOKIE_KEY", KEY);
const RULES: (&str, &str) = ("CAPSIGN_RULES", "/etc/capsign/rules.toml");
const SESSION: (&str, &str) = ("CAPSIGN_SESSION_SECRET", SECRET);

/// Issue 16 (1a): a production configuration without an identity source used to start in
/// demo identity (anyone could log in as anyone at `/login`, signed with the real key).
#[test]
fn production_settings_without_an_identity_source_are_refused() {
    for vars in [
        &[ABLY, COOKIE, RULES][..],
        &[ABLY][..],
        &[RULES][..],
        &[("CAPSIGN_POLICY_URL", "https://app.example/policy")][..],
    ] {
        let e = load(vars).unwrap_err();
        assert_eq!(e.setting, "CAPSIGN_SESSION_SECRET", "{vars:?}: {e}");
        assert!(e.problem.contains("CAPSIGN_SESSION_JWKS"), "{e}");
    }
    // Asked for explicitly, demo identity is still there (on loopback).
    let s = load(&[ABLY, RULES, ("CAPSIGN_IDENTITY", "demo")]).unwrap();
    assert!(s.is_demo());
}

/// Issue 16 (1b): a real identity without the Ably key or the cookie key used to sign with
/// the demo key, or seal with a random per-process key (every grant lost whenever a load
/// balancer switched instance).
#[test]
fn production_settings_need_the_ably_and_cookie_keys() {
    let e = load(&[SESSION, RULES, COOKIE]).unwrap_err();
    assert_eq!(e.setting, "ABLY_API_KEY", "{e}");
    let e = load(&[SESSION, RULES, ABLY]).unwrap_err();
    assert_eq!(e.setting, "CAPSIGN_COOKIE_KEY", "{e}");
    let e = load(&[SESSION, RULES, ("CAPSIGN_LISTEN", "0.0.0.0:8080")]).unwrap_err();
    assert_eq!(e.setting, "ABLY_API_KEY", "{e}");
    assert!(
        e.problem.contains("ABLY_API_KEY") && e.problem.contains("CAPSIGN_COOKIE_KEY"),
        "both named: {e}"
    );
    let s = load(&[SESSION, RULES, ABLY, COOKIE]).unwrap();
    assert!(s.demo_defaults.is_empty());
}

#[test]
fn cookie_key_lists() {
    let keys = CookieKeys::parse(&format!("2:{KEY}, 1:{KEY}")).unwrap();
    assert_eq!(keys.signing().0, 2);
    assert_eq!(keys.all().map(|(id, _)| id).collect::<Vec<_>>(), [2, 1]);
    assert!(CookieKeys::parse(&format!("{KEY},{KEY}")).is_err());
    assert!(CookieKeys::parse(&format!("1:{KEY},1:{KEY}")).is_err());
    assert!(CookieKeys::parse(&format!("0:{KEY}")).is_err());
}

#[test]
fn debug_redacts_secrets() {
    let s = load(&[
        ("ABLY_API_KEY", "app.key:TOPSECRETVALUE"),
        ("CAPSIGN_COOKIE_KEY", KEY),
        (
            "CAPSIGN_SESSION_SECRET",
            "SESSIONSECRET-0123456789abcdef-0123",
        ),
        ("CAPSIGN_POLICY_URL", "http://127.0.0.1:1/"),
        (
            "CAPSIGN_POLICY_SECRET",
            "POLICYSECRET-0123456789abcdef-0123",
        ),
    ])
    .unwrap();
    let shown = format!("{s:?}");
    for secret in ["TOPSECRETVALUE", "SESSIONSECRET", "POLICYSECRET"] {
        assert!(!shown.contains(secret), "{secret} shown");
    }
    // The cookie key's bytes, in any of the forms Debug might print them.
    assert!(!shown.contains(KEY) && !shown.contains("48, 49, 50, 51"));
    assert!(shown.contains("app.key"));
}

#[test]
fn file_settings_and_env_precedence() {
    let dir = std::env::temp_dir().join(format!("capsign-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "identity = \"demo\"\nformat = \"tokenRequest\"\nttl = \"10m\"\n",
    )
    .unwrap();
    let s = Settings::load(&|_| None, Some(&path)).unwrap();
    assert_eq!(s.flow.format, Format::TokenRequest);
    assert_eq!(s.flow.ttl.default_ms, 600_000);
    let s = Settings::load(
        &|k| (k == "CAPSIGN_FORMAT").then(|| "jwt".to_owned()),
        Some(&path),
    )
    .unwrap();
    assert_eq!(s.flow.format, Format::Jwt);
    std::fs::write(&path, "fromat = \"jwt\"\n").unwrap();
    let e = Settings::load(&|_| None, Some(&path)).unwrap_err();
    assert!(e.problem.contains("fromat"), "{e}");
    std::fs::write(&path, "ttl = \"1x\"\n").unwrap();
    let e = Settings::load(&|_| None, Some(&path)).unwrap_err();
    assert!(e.setting.starts_with("ttl in "), "{e}");
    std::fs::write(&path, "ably_api_key = \"\"\n").unwrap();
    let e = Settings::load(&|_| None, Some(&path)).unwrap_err();
    assert!(e.problem.contains("empty"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The configuration table (`docs/configuration.md`) lists exactly the settings of
/// [`TABLE`].
#[test]
fn the_configuration_table_lists_every_setting() {
    let section = include_str!("../../docs/configuration.md");
    let mut in_readme: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| l.split('|').nth(1).unwrap_or_default().split('`'))
        .filter(|w| w.starts_with("CAPSIGN_") || *w == "ABLY_API_KEY")
        .collect();
    in_readme.sort_unstable();
    let mut in_table: Vec<&str> = TABLE.iter().map(|d| d.name).collect();
    in_table.sort_unstable();
    assert_eq!(in_readme, in_table);
}

/// Each row of the configuration table shows the default its settings are declared with in
/// [`TABLE`] (formatting aside: backticks; a row of several settings shows theirs joined by
/// ` / `), so the documentation cannot drift from what capsign does.
#[test]
fn the_configuration_table_shows_the_declared_defaults() {
    let section = include_str!("../../docs/configuration.md");
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(names), Some(shown)) = (cells.get(1), cells.get(2)) else {
            panic!("a row without its cells: {row}");
        };
        let declared: Vec<&str> = names
            .split('`')
            .filter_map(|w| TABLE.iter().find(|d| d.name == w))
            .map(|d| d.default)
            .collect();
        assert!(!declared.is_empty(), "a row naming no setting: {row}");
        let expected = if declared.iter().all(|d| d.is_empty()) {
            String::new()
        } else {
            declared.join(" / ")
        };
        assert_eq!(shown.replace('`', ""), expected, "{names}");
    }
}

/// The table is where defaults come from: a `{"value", "rule"}` default is shown as
/// `value (rule)`, and a configuration that sets none of them gets the declared values, with
/// the rules applied, and what the words of the others say.
#[test]
fn unset_settings_take_the_declared_defaults() {
    let shown = |name: &str| {
        TABLE
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.default)
            .unwrap_or_default()
    };
    assert_eq!(shown("CAPSIGN_TTL"), "1h (at most CAPSIGN_TTL_MAX)");
    assert_eq!(shown("CAPSIGN_SHUTDOWN_DELAY"), "10s (0s in demo mode)");
    assert_eq!(shown("CAPSIGN_TTL_MAX"), "24h (1h with revocable tokens)");
    assert_eq!(
        shown("CAPSIGN_LOG_FORMAT"),
        "text (json when AWS_LAMBDA_LOG_FORMAT=JSON)"
    );
    let revocable = load(&[
        SESSION,
        RULES,
        ABLY,
        COOKIE,
        ("CAPSIGN_REVOCABLE_TOKENS", "true"),
    ]);
    let revocable = revocable.unwrap().flow.ttl;
    assert_eq!(
        (revocable.max_ms, revocable.default_ms),
        (ABLY_REVOCABLE_MAX_TTL_MS, 3_600_000),
        "1h with revocable tokens"
    );

    let s = load(&[
        SESSION,
        RULES,
        ABLY,
        COOKIE,
        ("CAPSIGN_MAX_CONNECTIONS", "8"),
    ])
    .unwrap();
    assert_eq!(s.flow.ttl.default_ms, 3_600_000);
    assert_eq!(s.flow.ttl.max_ms, ABLY_MAX_TTL_MS);
    assert_eq!(s.server.shutdown_delay, Duration::from_secs(10));
    assert_eq!(
        s.server.max_connections_per_peer, 4,
        "half of CAPSIGN_MAX_CONNECTIONS"
    );
    assert_eq!(s.log_format, LogFormat::Text);
    assert!(s.server.metrics_listen.is_none(), "(off)");
    assert!(s.http.cors_origins.is_empty(), "(none)");
    assert!(s.http.allowed_hosts.is_empty(), "(any)");
    let demo = load(&[]).unwrap();
    assert_eq!(
        demo.server.shutdown_delay,
        Duration::ZERO,
        "0s in demo mode"
    );
}

/// Every `CAPSIGN_*` name written in the code and the documentation is a setting of [`TABLE`]
/// (or its `_FILE` / `_AWS` form, or a prefix such as `CAPSIGN_SHUTDOWN_*`): a renamed or
/// mistyped setting anywhere fails here, not in front of an operator. The deliberate
/// exceptions (typos the tests feed in, response headers, a benchmark's variable, a client
/// example's constant) are listed.
#[test]
fn every_setting_named_anywhere_exists() {
    const NOT_SETTINGS: &[&str] = &[
        "CAPSIGN_COOKIE_KYE",
        "CAPSIGN_DNY",
        "CAPSIGN_WHATEVER_ELSE",
        "CAPSIGN_X",
        "CAPSIGN_RULES_FILE",
        "CAPSIGN_DENIED",
        "CAPSIGN_EVICTED",
        "CAPSIGN_GRANTS",
        "CAPSIGN_PARTIAL",
        "CAPSIGN_DHAT_PROFILE",
        "CAPSIGN_URL",
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("src"), root.join("docs"), root.join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let known = |name: &str| {
        let base = name
            .strip_suffix("_FILE")
            .or_else(|| name.strip_suffix("_AWS"))
            .unwrap_or(name);
        TABLE
            .iter()
            .any(|d| d.name == base || d.name.starts_with(name) && name.ends_with('_'))
            || NOT_SETTINGS.contains(&name)
    };
    let mut unknown = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find("CAPSIGN_") {
            let tail = rest.split_at(at).1;
            let end = tail
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            let name = tail.split_at(end).0;
            if !known(name) {
                unknown.push(format!("{}: {name}", file.display()));
            }
            rest = tail.split_at(end.max(1)).1;
        }
    }
    assert!(unknown.is_empty(), "names of no setting: {unknown:#?}");
}
