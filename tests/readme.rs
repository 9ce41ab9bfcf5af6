//! Runs every command of the README, in order, against a `cube up` cluster started here.
//!
//! Commands that start long-running servers (`cargo run -- up`) and the test suite itself
//! (`cargo test`) are not run: this test starts the cluster and is part of the suite.
//! `export PATH=...` is applied to every command. `./scripts/echo-image.sh` is done by its two
//! steps: the static echo build (as the Docker tests build it) and `cube image-echo`.
//! `localhost:5555` is replaced by the address of the cluster started here, and `localhost:5556`
//! by that of a `cube worker` started here.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Cleanup, CubeProcess};

/// The lines of the README's ```sh blocks.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && !l.is_empty() && !l.starts_with('#') => commands.push(l.to_string()),
            _ => {}
        }
    }
    commands
}

#[actix_rt::test]
async fn every_readme_command_works() {
    let docker = support::docker_ready().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cube"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("readme-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let runtime = if docker { "docker" } else { "sim" };
    let up = CubeProcess::spawn(
        &[
            "up",
            "--runtime",
            runtime,
            "--listen",
            "127.0.0.1:0",
            "--node-prefix",
            &prefix,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let _cleanup: Vec<Cleanup> = (1..=3).map(|i| Cleanup(format!("{prefix}-{i}"))).collect();
    let address = up.base.trim_start_matches("http://").to_string();
    // The worker the README's curl tour joins (it stands for `cube worker` on port 5556).
    let worker_data = dir.path().join("extra");
    let worker = CubeProcess::spawn(
        &[
            "worker",
            "--runtime",
            "sim",
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
            "--name",
            &format!("{prefix}-extra"),
            "--data-dir",
            worker_data.to_str().unwrap(),
        ],
        &[],
    );
    let worker_address = worker.base.trim_start_matches("http://").to_string();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let commands = readme_commands();
    assert!(commands.len() > 15, "the README has its tour: {commands:?}");
    let mut ran = 0;
    for command in commands {
        if command.starts_with("cargo run")
            || command.starts_with("cargo test")
            || command.starts_with("export PATH=")
        {
            continue;
        }
        if command == "./scripts/echo-image.sh" {
            if docker {
                support::echo_image().await;
                let binary = support::echo_binary();
                let out = Command::new(env!("CARGO_BIN_EXE_cube"))
                    .args([
                        "image-echo",
                        "--binary",
                        binary.to_str().unwrap(),
                        "--tag",
                        "cube/echo:latest",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "image-echo: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            continue;
        }
        let line = command
            .replace("localhost:5555", &address)
            .replace("localhost:5556", &worker_address);
        let out = Command::new("sh")
            .args(["-c", &line])
            .current_dir(root)
            .env("PATH", &path)
            .env("CUBE_MANAGER", &address)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README command failed: {command}\n{stdout}{stderr}"
        );
        if command.starts_with("curl") && !command.contains("/logs") {
            let body: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {stdout}"));
            assert!(
                body.get("HTTPStatusCode").is_none(),
                "{command}: answered an error: {body}"
            );
        }
        ran += 1;
    }
    assert!(ran > 15, "ran {ran} commands");
}
