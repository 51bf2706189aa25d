//! Config fixtures: the root config.toml and the good fixtures load; every bad
//! fixture is refused with the TOML path (and reason) its first lines expect.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use bff_proxy::config::{Config, Env};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_root_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = Config::load(&path, &Env::default()).unwrap();
    assert!(config.dev.idp, "the demo runs the dev IdP");
    assert!(config.dev.echo.is_some(), "the demo runs the echo upstream");
    assert!(config.session.secure);
    assert_eq!(config.session.cookie_name, "__Host-Http-bff");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn good_fixtures_load() {
    let files = fixtures("good");
    assert!(!files.is_empty());
    for file in files {
        if let Err(e) = Config::load(&file, &Env::default()) {
            panic!("{}: {e:?}", file.display());
        }
    }
}

#[test]
fn each_bad_fixture_is_refused_with_its_path() {
    let files = fixtures("bad");
    assert!(files.len() >= 30, "only {} bad fixtures", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' line", file.display()));
        let message = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect-message: "));
        let err = match Config::load(&file, &Env::default()) {
            Ok(_) => panic!("{} loaded, but should fail at {expect}", file.display()),
            Err(err) => err,
        };
        let hit = err
            .problems
            .iter()
            .find(|p| p.path == expect)
            .unwrap_or_else(|| {
                panic!(
                    "{}: no problem at {expect}; got {:?}",
                    file.display(),
                    err.problems
                )
            });
        if let Some(message) = message {
            assert!(
                hit.message.contains(message),
                "{}: {:?} lacks {message:?}",
                file.display(),
                hit.message
            );
        }
        // The one-line form names the path too.
        assert!(err.to_string().contains(expect) || err.problems.len() > 1);
    }
}
