//! `scripts/build-image.sh` is how users get an image at all (none is published), so what it
//! asks the container engine to do is tested here. A fake `docker` (and `podman`) first on
//! PATH records every invocation; the tests assert the exact build, tag and push commands,
//! the kustomize override the script prints, and that it refuses references it can not use
//! before running any engine command.
//!
//! PATH holds only the fakes and `bash`: the script uses shell built-ins and the engine, so a
//! real docker on the machine is never reached.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const IMAGE: &str = "registry.example.com/team/kmailops:0.1.0";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("scripts/build-image.sh")
}

/// A folder to put first on PATH, with `bash` and fake container engines.
struct FakeBin {
    dir: tempfile::TempDir,
}

impl FakeBin {
    fn new(engines: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bash = find_on_path("bash").expect("bash on PATH");
        std::os::unix::fs::symlink(bash, dir.path().join("bash")).unwrap();
        let fake = Self { dir };
        for engine in engines {
            fake.add_engine(engine);
        }
        fake
    }

    /// An engine that appends `--- <name> BUILDKIT=<value>` and then one argument per line to
    /// the log, and exits 1 when its subcommand equals `$FAKE_ENGINE_FAIL`.
    fn add_engine(&self, name: &str) {
        let path = self.dir.path().join(name);
        let log = self.log_path();
        let body = format!(
            "#!/bin/sh\n\
             printf '%s\\n' \"--- {name} BUILDKIT=${{DOCKER_BUILDKIT:-}}\" \"$@\" >> '{log}'\n\
             if [ \"$1\" = \"${{FAKE_ENGINE_FAIL:-}}\" ]; then echo \"fake {name}: $1 failed\" >&2; exit 1; fi\n",
            log = log.display()
        );
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("engine.log")
    }

    /// The recorded invocations: (engine, BUILDKIT value, arguments).
    fn calls(&self) -> Vec<Call> {
        let Ok(text) = std::fs::read_to_string(self.log_path()) else {
            return Vec::new();
        };
        let mut calls: Vec<Call> = Vec::new();
        for line in text.lines() {
            if let Some(head) = line.strip_prefix("--- ") {
                let (engine, buildkit) = head.split_once(" BUILDKIT=").unwrap();
                calls.push(Call {
                    engine: engine.to_string(),
                    buildkit: buildkit.to_string(),
                    args: Vec::new(),
                });
            } else {
                calls.last_mut().unwrap().args.push(line.to_string());
            }
        }
        calls
    }

    /// Runs the script with only this folder on PATH.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(script());
        cmd.args(args)
            .env("PATH", self.dir.path())
            .env_remove("KMAILOPS_IMAGE")
            .env_remove("KMAILOPS_CONTAINER_ENGINE")
            .env_remove("KMAILOPS_PLATFORM")
            .env_remove("DOCKER_BUILDKIT")
            .env_remove("FAKE_ENGINE_FAIL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("scripts/build-image.sh runs")
    }
}

#[derive(Debug)]
struct Call {
    engine: String,
    buildkit: String,
    args: Vec<String>,
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn args_of(call: &Call) -> Vec<&str> {
    call.args.iter().map(String::as_str).collect()
}

fn build_args(image: &str) -> Vec<String> {
    let root = repo().to_str().unwrap();
    vec![
        "build".into(),
        "--file".into(),
        format!("{root}/Dockerfile"),
        "--tag".into(),
        image.into(),
        root.into(),
    ]
}

/// The image name `deploy/deployment.yaml` runs, without its tag.
fn deployed_image_name() -> String {
    let text = std::fs::read_to_string(repo().join("deploy/deployment.yaml")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("image:"))
        .expect("deploy/deployment.yaml names an image");
    let image = line.trim();
    image.rsplit_once(':').map_or(image, |(n, _)| n).to_string()
}

fn assert_refused(out: &Output, fake: &FakeBin, says: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused with exit code 2; stderr: {}",
        stderr(out)
    );
    assert!(
        stderr(out).contains(says),
        "the refusal says {says:?}; stderr: {}",
        stderr(out)
    );
    let calls = fake.calls();
    assert!(
        calls.is_empty(),
        "no engine command runs after a refusal: {calls:?}"
    );
}

#[test]
fn it_builds_from_the_repository_dockerfile_then_pushes_with_docker_and_buildkit() {
    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&[IMAGE], &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].engine, "docker");
    assert_eq!(calls[0].args, build_args(IMAGE));
    assert_eq!(
        calls[0].buildkit, "1",
        "RUN --mount in the Dockerfile needs BuildKit"
    );
    assert_eq!(args_of(&calls[1]), ["push", IMAGE]);
}

#[test]
fn it_prints_the_kustomize_override_for_the_image_deploy_runs() {
    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&[IMAGE], &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let base = deployed_image_name();
    assert_eq!(base, "ghcr.io/kmailops/kmailops");
    assert!(
        text.contains(&format!(
            "(cd deploy && kustomize edit set image {base}={IMAGE})"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  images:\n    - name: {base}\n      newName: registry.example.com/team/kmailops\n      newTag: \"0.1.0\"\n"
        )),
        "{text}"
    );
}

#[test]
fn no_push_builds_only_and_says_the_image_is_not_in_a_registry_yet() {
    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&["--no-push", IMAGE], &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].args, build_args(IMAGE));
    assert!(stdout(&out).contains("not pushed"), "{}", stdout(&out));
}

#[test]
fn the_last_of_push_and_no_push_wins() {
    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&["--no-push", "--push", IMAGE], &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(fake.calls().len(), 2, "build and push");
}

#[test]
fn platform_is_passed_to_the_build_from_the_flag_or_the_environment() {
    for (args, env) in [
        (vec!["--platform", "linux/arm64", IMAGE], vec![]),
        (vec!["--platform=linux/arm64", IMAGE], vec![]),
        (vec![IMAGE], vec![("KMAILOPS_PLATFORM", "linux/arm64")]),
    ] {
        let fake = FakeBin::new(&["docker"]);
        let out = fake.run(&args, &env);
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        let calls = fake.calls();
        let build = args_of(&calls[0]);
        assert_eq!(build[0], "build");
        let at = build
            .iter()
            .position(|a| *a == "--platform")
            .unwrap_or_else(|| panic!("--platform passed on: {build:?}"));
        assert_eq!(build[at + 1], "linux/arm64");
        assert_eq!(
            *build.last().unwrap(),
            repo().to_str().unwrap(),
            "the context stays last"
        );
    }
}

#[test]
fn extra_tags_are_tagged_and_pushed_with_the_main_one() {
    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&["--also-tag", "0.1", "--also-tag=stable", IMAGE], &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let calls = fake.calls();
    let got: Vec<Vec<&str>> = calls.iter().map(args_of).collect();
    let build = build_args(IMAGE);
    assert_eq!(got[0], build.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        got[1..],
        [
            vec!["tag", IMAGE, "registry.example.com/team/kmailops:0.1"],
            vec!["tag", IMAGE, "registry.example.com/team/kmailops:stable"],
            vec!["push", IMAGE],
            vec!["push", "registry.example.com/team/kmailops:0.1"],
            vec!["push", "registry.example.com/team/kmailops:stable"],
        ]
    );
}

#[test]
fn the_image_may_come_from_the_environment_and_a_registry_port_is_a_host() {
    let fake = FakeBin::new(&["docker"]);
    let image = "localhost:5000/kmailops:dev";
    let out = fake.run(&[], &[("KMAILOPS_IMAGE", image)]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let calls = fake.calls();
    assert_eq!(calls[0].args, build_args(image));
    assert_eq!(args_of(&calls[1]), ["push", image]);
    assert!(stdout(&out).contains("      newName: localhost:5000/kmailops\n      newTag: \"dev\""));
}

#[test]
fn podman_is_used_when_docker_is_missing() {
    let fake = FakeBin::new(&["podman"]);
    let out = fake.run(&[IMAGE], &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.engine == "podman"), "{calls:?}");
    assert_eq!(calls[0].args, build_args(IMAGE));
    assert_eq!(args_of(&calls[1]), ["push", IMAGE]);
}

#[test]
fn docker_is_preferred_and_the_environment_overrides_the_choice() {
    let fake = FakeBin::new(&["docker", "podman"]);
    let out = fake.run(&["--no-push", IMAGE], &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(fake.calls()[0].engine, "docker");

    let fake = FakeBin::new(&["docker", "podman"]);
    let out = fake.run(&[IMAGE], &[("KMAILOPS_CONTAINER_ENGINE", "podman")]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.engine == "podman"), "{calls:?}");
    assert_eq!(calls[0].buildkit, "", "DOCKER_BUILDKIT is docker's alone");
}

#[test]
fn without_an_engine_it_says_so() {
    let fake = FakeBin::new(&[]);
    let out = fake.run(&[IMAGE], &[]);
    assert_refused(&out, &fake, "neither docker nor podman");

    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&[IMAGE], &[("KMAILOPS_CONTAINER_ENGINE", "nerdctl")]);
    assert_refused(&out, &fake, "KMAILOPS_CONTAINER_ENGINE=nerdctl");
}

#[test]
fn a_failed_build_stops_before_anything_is_pushed() {
    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&[IMAGE], &[("FAKE_ENGINE_FAIL", "build")]);
    assert!(!out.status.success());
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "only the build ran: {calls:?}");
    assert_eq!(calls[0].args[0], "build");
    assert!(stderr(&out).contains("fake docker: build failed"));
}

#[test]
fn without_an_image_reference_it_refuses_and_shows_an_example() {
    let fake = FakeBin::new(&["docker"]);
    let out = fake.run(&[], &[]);
    assert_refused(&out, &fake, "no image reference");
    assert!(stderr(&out).contains("registry.example.com/team/kmailops:0.1.0"));

    let out = fake.run(&["--push"], &[("KMAILOPS_IMAGE", "")]);
    assert_refused(&out, &fake, "no image reference");
}

#[test]
fn references_it_can_not_build_are_refused_with_the_reason() {
    let fake = FakeBin::new(&["docker"]);
    for (image, says) in [
        ("registry.example.com/team/kmailops", "no tag"),
        (
            "registry.example.com/team/kmailops:",
            "the tag '' is not valid",
        ),
        (
            "registry.example.com/team/kmailops:.1",
            "the tag '.1' is not valid",
        ),
        (
            "registry.example.com/Team/kmailops:0.1.0",
            "'Team' is not valid",
        ),
        (
            "registry.example.com/team/kmailops-:0.1.0",
            "'kmailops-' is not valid",
        ),
        (
            "registry.example.com//kmailops:0.1.0",
            "empty path component",
        ),
        ("registry.example.com/team/kmailops@sha256:0123", "a digest"),
        ("registry.example.com/team/km ailops:0.1.0", "white space"),
        (
            "bad_host.example.com/kmailops:0.1.0",
            "registry host 'bad_host.example.com'",
        ),
    ] {
        let out = fake.run(&[image], &[]);
        assert_refused(&out, &fake, says);
        assert!(
            stderr(&out).contains("is not a usable image reference"),
            "{image}: {}",
            stderr(&out)
        );
    }
    let out = fake.run(&["--also-tag", "-x", IMAGE], &[]);
    assert_refused(&out, &fake, "--also-tag '-x' is not a valid tag");
    let out = fake.run(&["--frobnicate", IMAGE], &[]);
    assert_refused(&out, &fake, "unknown option --frobnicate");
    let out = fake.run(&[IMAGE, "other.example.com/kmailops:1"], &[]);
    assert_refused(&out, &fake, "one image reference only");
}

#[test]
fn a_push_without_a_registry_host_is_refused_but_a_local_build_is_not() {
    for image in ["kmailops:0.1.0", "team/kmailops:0.1.0"] {
        let fake = FakeBin::new(&["docker"]);
        let out = fake.run(&[image], &[]);
        assert_refused(&out, &fake, "names no registry host");
        assert!(stderr(&out).contains("Docker Hub"), "{}", stderr(&out));

        let out = fake.run(&["--no-push", image], &[]);
        assert!(out.status.success(), "{image}: {}", stderr(&out));
        let calls = fake.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].args, build_args(image));
    }
}
