//! What the command filter and the path policy let through, against the real server and a
//! real sshd: characters that hide in a command, and files `ssh_cat_file` must not hand out
//! whatever name they are reached by.

mod common;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::common::{Client, Era, server, shared_tmp_dir, sshd_testuser};

    /// Invisible and format characters (Unicode Default_Ignorable_Code_Point or category Cf)
    /// that passed the command filter before issue 25, U+061C among them.
    const INVISIBLE: &[char] = &[
        '\u{00AD}',
        '\u{034F}',
        '\u{061C}',
        '\u{115F}',
        '\u{1160}',
        '\u{17B4}',
        '\u{17B5}',
        '\u{180E}',
        '\u{2065}',
        '\u{206A}',
        '\u{3164}',
        '\u{FE0F}',
        '\u{FFA0}',
        '\u{FFF9}',
        '\u{1D173}',
        '\u{E0041}',
    ];

    /// Issue 25, item 5: each invisible or format character inside an argument is refused
    /// by the command filter, naming it, before anything runs. Before, eight of them went
    /// through and the command ran with them.
    #[tokio::test]
    async fn invisible_and_format_characters_are_refused() {
        let sshd = sshd_testuser();
        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = c.connect_testuser(sshd.port).await;
        let mut passed = Vec::new();
        for ch in INVISIBLE {
            let command = format!("ls /tmp/x{ch}y");
            let r = c
                .call(
                    "ssh_run_command",
                    json!({"session_id": sid, "command": command}),
                )
                .await;
            let text = r["content"][0]["text"].as_str().unwrap_or_default();
            let named = format!("character U+{:04X} is not allowed", u32::from(*ch));
            if r["isError"] != true || !text.contains(&named) {
                passed.push(format!("U+{:04X}: {text}", u32::from(*ch)));
            }
        }
        eprintln!(
            "invisible characters: {} of {} passed the filter",
            passed.len(),
            INVISIBLE.len()
        );
        assert!(passed.is_empty(), "passed the filter: {passed:#?}");
        srv.stop().await.expect("stops");
    }

    /// Gives `path` `mode` and the owner of `like` (the test user's home: its files are the
    /// user's own, so only the policy stands between them and a read).
    fn own_like(path: &Path, mode: u32, like: &Path) {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(like).expect("home");
        set_mode(path, mode);
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).expect("chown");
    }

    /// Writes `contents` to `path`, then [`own_like`].
    fn owned_file(path: &Path, contents: &str, mode: u32, like: &Path) {
        std::fs::write(path, contents).expect("write");
        own_like(path, mode, like);
    }

    /// Issue 25, item 5: `ssh_cat_file` judges the file the target opened, not the name it
    /// was given: a hard link to a private key, a hard link to a group-readable file under
    /// `.ssh`, `~/.python_history` (not on any list) and a key under `~/.ѕsh/` (a Cyrillic
    /// `ѕ`) are refused, none of their content is returned, and ordinary files (one
    /// hard-linked, readable by everyone) still read. Before, all four were returned.
    #[tokio::test]
    async fn cat_file_judges_what_it_opened_not_its_name() {
        let sshd = sshd_testuser();
        let home = sshd.home("testuser");
        let key =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET\n-----END OPENSSH PRIVATE KEY-----\n";
        for dir in [".ssh", ".ѕsh"] {
            std::fs::create_dir_all(home.join(dir)).expect("mkdir");
            own_like(&home.join(dir), 0o700, &home);
        }
        owned_file(&home.join(".ssh/id_work"), key, 0o600, &home);
        std::fs::hard_link(home.join(".ssh/id_work"), home.join("notes.bak")).expect("link");
        // Group-readable, like /etc/shadow (0640): its other name is refused for having two.
        owned_file(&home.join(".ssh/token"), "SECRET\n", 0o640, &home);
        std::fs::hard_link(home.join(".ssh/token"), home.join("token.bak")).expect("link");
        owned_file(&home.join(".ѕsh/deploy"), key, 0o600, &home);
        owned_file(
            &home.join(".python_history"),
            "token = 'SECRET'\n",
            0o600,
            &home,
        );
        owned_file(&home.join("readme.txt"), "hello\n", 0o644, &home);
        std::fs::hard_link(home.join("readme.txt"), home.join("readme.link")).expect("link");

        let srv = server(&[]).await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = c.connect_testuser(sshd.port).await;
        let cat = |p: &str| json!({"session_id": sid, "path": home.join(p).display().to_string()});
        let mut returned = Vec::new();
        for (name, why) in [
            ("notes.bak", "private to its owner"),
            ("token.bak", "2 names"),
            (".python_history", "private to its owner"),
            (".ѕsh/deploy", "private to its owner"),
        ] {
            let r = c.call("ssh_cat_file", cat(name)).await;
            let text = r["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if r["isError"] != true || text.contains("SECRET") || !text.contains(why) {
                returned.push(format!("{name}: {text}"));
            }
        }
        eprintln!("cat_file: {} of 4 private files returned", returned.len());
        assert!(returned.is_empty(), "{returned:#?}");
        for name in ["readme.txt", "readme.link"] {
            let ok = c.call_ok("ssh_cat_file", cat(name)).await;
            assert_eq!(ok["content"], "hello\n", "{name}: {ok}");
        }
        srv.stop().await.expect("stops");
    }

    /// Issue 25, item 5: a directory on the path swapped for a link to a credentials
    /// directory while files are read (the race the name-based form lost: between its
    /// `realpath` and its `cat`). 300 reads: each returns the harmless file or is refused;
    /// the secret is never returned. Before, 21 of 300 returned it.
    #[tokio::test]
    async fn cat_file_cannot_be_raced_by_swapping_a_directory() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let sshd = sshd_testuser();
        let dir = shared_tmp_dir("mcp-race-");
        let d = dir.path().to_owned();
        std::fs::create_dir(d.join("x")).expect("mkdir");
        std::fs::write(d.join("x/f"), "harmless\n").expect("write");
        std::fs::create_dir(d.join(".aws")).expect("mkdir");
        std::fs::write(d.join(".aws/f"), "SECRET\n").expect("write");
        for p in ["x", ".aws"] {
            set_mode(&d.join(p), 0o755);
            set_mode(&d.join(p).join("f"), 0o644);
        }
        // `d/x` is a real directory (so it stays in the resolved path `d/x/f`), then for a
        // moment a link to the secret directory, then the directory again.
        let flipping = Arc::new(AtomicBool::new(true));
        let flipper = {
            let (d, flipping) = (d.clone(), flipping.clone());
            std::thread::spawn(move || {
                let (x, away) = (d.join("x"), d.join("x.away"));
                while flipping.load(Ordering::Relaxed) {
                    let _ = std::fs::rename(&x, &away);
                    let _ = std::os::unix::fs::symlink(d.join(".aws"), &x);
                    let _ = std::fs::remove_file(&x);
                    let _ = std::fs::rename(&away, &x);
                }
            })
        };
        let srv = server(&[
            "--rate-limit-per-min",
            "0",
            "--global-rate-limit-per-min",
            "0",
        ])
        .await;
        let mut c = Client::connect(srv.addr, Era::Legacy).await;
        let sid = c.connect_testuser(sshd.port).await;
        let path = d.join("x/f").display().to_string();
        let (mut harmless, mut refused, mut leaked) = (0, 0, 0);
        for _ in 0..300 {
            let r = c
                .call("ssh_cat_file", json!({"session_id": sid, "path": path}))
                .await;
            let text = r["content"][0]["text"].as_str().unwrap_or_default();
            if text.contains("SECRET") {
                leaked += 1;
            } else if r["isError"] == false {
                harmless += 1;
            } else {
                refused += 1;
            }
        }
        flipping.store(false, Ordering::Relaxed);
        flipper.join().expect("flipper");
        eprintln!("race: {harmless} harmless, {refused} refused, {leaked} leaked of 300");
        assert_eq!(leaked, 0, "{leaked} of 300 reads returned the secret");
        assert!(
            harmless > 0 && refused > 0,
            "the race did not happen: {harmless}/{refused}"
        );
        srv.stop().await.expect("stops");
    }

    fn set_mode(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}
