//! The simulated world: projects, pipelines, their run plans, and the state of a run at any time.
//!
//! Every pipeline owns an RNG seeded from the simulator seed and its index, so what it does
//! never depends on which requests arrived first. A run is planned completely when it is
//! created (relative times of every stage, job and step); its state at time `t` is then a pure
//! function of the plan and `t`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use fastrand::Rng;

/// Runs kept per pipeline; older ones are forgotten so memory stays bounded.
pub(crate) const MAX_RUNS: usize = 500;

const HOUR_MS: i64 = 3_600_000;

// v5 statuses of runs, stages, jobs and steps (reference 3.2 and 3.3).
/// Not started.
pub(crate) const INIT: &str = "INIT";
/// Waiting for an executor.
pub(crate) const QUEUED: &str = "QUEUED";
/// Executing.
pub(crate) const RUNNING: &str = "RUNNING";
/// Succeeded.
pub(crate) const COMPLETED: &str = "COMPLETED";
/// Failed.
pub(crate) const FAILED: &str = "FAILED";
/// Cancelled by a user.
pub(crate) const CANCELED: &str = "CANCELED";
/// Waiting for a manual review.
pub(crate) const PAUSED: &str = "PAUSED";
/// Suspended.
pub(crate) const SUSPEND: &str = "SUSPEND";
/// Deselected for this run: never runs.
pub(crate) const UNSELECTED: &str = "UNSELECTED";

/// Most stages a pipeline can have: an initial stage, every work stage and a review.
const MAX_STAGES: usize = 16;

/// Knobs of the generated world for benchmarks; the default keeps every seed's world as it was.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shape {
    /// Mean number of stages per pipeline (drawn within ±2 of it); default: 2 to 8.
    pub stages: Option<usize>,
    /// Share of pipelines with a run in progress at any time (gaps between runs are sized for
    /// it); default: runs follow each other after 2 to 60 nominal minutes.
    pub running_share: Option<f64>,
}

impl Shape {
    /// The range the stage count of a pipeline is drawn from.
    fn stage_range(&self) -> std::ops::RangeInclusive<usize> {
        match self.stages {
            None => 2..=8,
            Some(mean) => {
                let mean = mean.clamp(2, MAX_STAGES - 2);
                let half = (mean - 2).min(2);
                mean - half..=mean + half
            }
        }
    }

    /// The running share, when set and usable.
    fn share(&self) -> Option<f64> {
        self.running_share
            .filter(|share| share.is_finite() && *share > 0.0 && *share < 1.0)
    }
}

/// The region the simulated service pretends to be in.
pub(crate) const REGION: &str = "cn-north-4";

const CANCEL_MESSAGE: &str = "流水线已被用户取消 (canceled by user)";

const FAILURE_MESSAGES: [&str; 6] = [
    "Build failed: exit code 1",
    "单元测试失败: 3 个用例未通过",
    "部署超时, 请检查目标主机",
    "Échec de la compilation: erreur de syntaxe",
    "CodeCheck: 发现 2 个严重问题",
    "Helm upgrade failed: timed out waiting for the condition",
];

const PROJECT_NAMES: [&str; 6] = [
    "电商平台",
    "Plateforme Données",
    "mobile-apps",
    "基础设施",
    "Zahlungsverkehr",
    "内部工具",
];

/// Prefix of a pipeline name and the repository it builds.
const PIPELINE_SUBJECTS: [(&str, &str); 12] = [
    ("订单服务", "order-service"),
    ("支付网关", "payment-gateway"),
    ("user-center", "user-center"),
    ("Déploiement API", "api-deploy"),
    ("库存系统", "inventory"),
    ("search-engine", "search-engine"),
    ("消息推送", "push-service"),
    ("Gateway", "gateway"),
    ("报表平台", "reporting"),
    ("Ünified Auth", "unified-auth"),
    ("会员中心", "member-center"),
    ("données-export", "data-export"),
];
const PIPELINE_KINDS: [&str; 8] = [
    "build",
    "发布",
    "deploy",
    "CI",
    "夜间构建",
    "release",
    "流水线",
    "intégration",
];
const SEPARATORS: [&str; 4] = ["-", "·", " ", "_"];
const DESCRIPTIONS: [&str; 5] = [
    "",
    "主干构建与发布",
    "Nightly build and tests",
    "Chaîne de livraison continue",
    "每次合入后自动部署到预发环境",
];

/// Tags of pipelines; drawn from their own RNG so adding them changed no existing world.
const TAGS: [&str; 5] = ["backend", "frontend", "nightly", "发布", "mobile"];
/// Salt of the tag RNG of each pipeline.
const TAG_SALT: u64 = 0x7461_6773;

/// Zero to two tags for pipeline `index`.
fn tags_for(seed: u64, index: usize) -> Vec<String> {
    let mut rng = Rng::with_seed(mix(seed ^ TAG_SALT, index as u64));
    let mut pool = TAGS;
    rng.shuffle(&mut pool);
    pool[..rng.usize(0..=2)]
        .iter()
        .map(|t| (*t).to_string())
        .collect()
}

const INITIAL_STAGES: [&str; 4] = ["源代码", "代码检出", "Checkout", "准备"];
const REVIEW_STAGES: [&str; 3] = ["人工审核", "Revue manuelle", "发布审批"];
/// Non-initial, non-review stages in the order a pipeline would run them.
const WORK_STAGES: [(&str, &str); 15] = [
    ("代码检查", "check"),
    ("Security Scan", "check"),
    ("依赖扫描", "check"),
    ("构建", "build"),
    ("Build", "build"),
    ("镜像构建", "build"),
    ("Compilation", "build"),
    ("单元测试", "test"),
    ("Intégration", "test"),
    ("接口测试", "test"),
    ("E2E Tests", "test"),
    ("部署-预发", "deploy"),
    ("Deploy staging", "deploy"),
    ("Déploiement prod", "deploy"),
    ("部署-生产", "deploy"),
];

fn job_names(dsl: &str) -> [&'static str; 4] {
    match dsl {
        "initial" => ["代码下载", "Checkout repo", "子模块同步", "Cache warm-up"],
        "check" => ["CodeCheck", "SonarQube 扫描", "依赖漏洞扫描", "Secret scan"],
        "build" => ["Maven构建", "npm build", "Docker 镜像", "Go build"],
        "test" => ["JUnit", "pytest 用例", "覆盖率统计", "Tests d'API"],
        "review" => ["审核通知", "变更单检查", "Notification", "Approval sync"],
        _ => ["CCE部署", "Helm upgrade", "主机部署", "Smoke test"],
    }
}

/// The first step of a job: what the job is about.
fn main_step(dsl: &str) -> (&'static str, &'static str) {
    match dsl {
        "initial" => ("代码下载", "official_devcloud_checkout"),
        "check" => ("代码检查", "official_devcloud_codeCheck"),
        "build" => ("编译构建", "official_devcloud_cloudBuild"),
        "test" => ("测试执行", "official_devcloud_apiTest"),
        "review" => ("发送通知", "official_devcloud_notify"),
        _ => ("部署", "official_devcloud_deploy"),
    }
}

const EXTRA_STEPS: [(&str, &str); 3] = [
    ("执行Shell", "official_shell_plugin"),
    ("上传制品", "official_devcloud_uploadArtifact"),
    ("Run command", "official_shell_plugin"),
];

const EXECUTOR_NAMES: [&str; 6] = [
    "张伟",
    "devops-bot",
    "Zoë Martin",
    "李娜",
    "ci-robot",
    "王芳",
];

const BRANCHES: [&str; 6] = [
    "master",
    "main",
    "develop",
    "release/2.1",
    "feature/x",
    "feature/支付重构",
];
const SOURCE_BRANCHES: [&str; 3] = ["feature/x", "feature/支付重构", "bugfix/timeout"];
const COMMIT_MESSAGES: [&str; 6] = [
    "新建文件 Dockerfile",
    "fix: retry on 429",
    "修复登录超时问题",
    "feat: ajout de l'export CSV",
    "chore: bump dependencies",
    "重构订单状态机",
];

/// SplitMix64 finaliser: spreads seeds so nearby inputs give unrelated RNG streams.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from `seed` and `salt`.
pub(crate) fn mix(seed: u64, salt: u64) -> u64 {
    splitmix64(seed ^ splitmix64(salt))
}

/// 32 lower-case hex digits, the shape of every CodeArts id.
pub(crate) fn hex_id(rng: &mut Rng) -> String {
    hex_digits(rng, 32)
}

fn hex_digits(rng: &mut Rng, len: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..len).map(|_| DIGITS[rng.usize(..16)] as char).collect()
}

/// An id that is a pure function of `seed` and `path`: per-run ids need no storage.
pub(crate) fn derived_id(seed: u64, path: &[u64]) -> String {
    let derived = path.iter().fold(seed, |acc, part| mix(acc, *part));
    hex_id(&mut Rng::with_seed(derived))
}

/// A job or step identifier as the console creates them: creation ms followed by a UUID.
fn identifier(rng: &mut Rng, created_ms: i64) -> String {
    format!(
        "{created_ms}{}-{}-{}-{}-{}",
        hex_digits(rng, 8),
        hex_digits(rng, 4),
        hex_digits(rng, 4),
        hex_digits(rng, 4),
        hex_digits(rng, 12)
    )
}

/// Nominal seconds to real milliseconds at `speed`; at least 1 ms so phases stay ordered.
fn real_ms(nominal_seconds: f64, speed: f64) -> i64 {
    ((nominal_seconds * 1000.0 / speed).round() as i64).max(1)
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

/// A step of a job, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepDef {
    pub name: String,
    pub task: &'static str,
    pub identifier: String,
}

/// A job of a stage, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobDef {
    pub name: String,
    pub identifier: String,
    pub steps: Vec<StepDef>,
}

/// A stage, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageDef {
    /// What people see (v5 `name`, v3 `display_name`).
    pub name: String,
    /// The v3 internal name: `initial`, then `state_<n>`.
    pub internal: String,
    pub identifier: String,
    /// `initial`, `check`, `build`, `test`, `review` or `deploy`.
    pub dsl: &'static str,
    pub jobs: Vec<JobDef>,
}

impl StageDef {
    /// Manual-review stages pause the run before their jobs.
    pub fn is_review(&self) -> bool {
        self.dsl == "review"
    }
}

/// A pipeline, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PipelineDef {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub project: usize,
    pub stages: Vec<StageDef>,
    /// Stage durations scale with this, so some pipelines take minutes and others hours.
    pub scale: f64,
    pub create_ms: i64,
    pub description: &'static str,
    pub repo: &'static str,
    pub codehub_id: String,
    pub creator: usize,
    /// Labels users put on pipelines (the list API's `tag_list`).
    pub tags: Vec<String>,
}

impl PipelineDef {
    /// v5 stage times in the status and list APIs: epoch-ms strings (true) or dates (false).
    pub fn epoch_stage_times(&self) -> bool {
        self.index.is_multiple_of(2)
    }

    /// v3 empty values: `""` (true) or `null` (false); the reference documents both.
    pub fn empty_strings(&self) -> bool {
        self.index % 3 == 1
    }

    fn generate(
        index: usize,
        project: usize,
        rng: &mut Rng,
        started_at_ms: i64,
        executors: usize,
        shape: &Shape,
    ) -> PipelineDef {
        let id = hex_id(rng);
        let (subject, repo) = PIPELINE_SUBJECTS[index % PIPELINE_SUBJECTS.len()];
        let kind = pick(rng, &PIPELINE_KINDS);
        let sep = pick(rng, &SEPARATORS);
        // The index makes names unique whatever the pools give.
        let name = format!("{subject}{sep}{kind}{sep}{:02}", index + 1);
        let create_ms = started_at_ms - HOUR_MS * 24 * (3 + rng.i64(0..400));
        let roll = rng.f64();
        let scale = if roll < 0.55 {
            0.02 + 0.13 * rng.f64()
        } else if roll < 0.85 {
            0.15 + 0.35 * rng.f64()
        } else {
            0.6 + 0.4 * rng.f64()
        };

        let count = rng.usize(shape.stage_range());
        let review = count >= 3 && rng.f64() < 0.4;
        let work_count = count - 1 - usize::from(review);
        let mut chosen: Vec<usize> = (0..WORK_STAGES.len()).collect();
        rng.shuffle(&mut chosen);
        chosen.truncate(work_count);
        chosen.sort_unstable();
        let mut layout: Vec<(&str, &'static str)> = vec![(pick(rng, &INITIAL_STAGES), "initial")];
        layout.extend(chosen.iter().map(|&i| WORK_STAGES[i]));
        if review {
            // Reviews gate deployments; without one they come last.
            let at = layout
                .iter()
                .position(|(_, dsl)| *dsl == "deploy")
                .unwrap_or(layout.len());
            layout.insert(at, (pick(rng, &REVIEW_STAGES), "review"));
        }

        let mut state_number = 1;
        let stages = layout
            .into_iter()
            .enumerate()
            .map(|(order, (stage_name, dsl))| {
                let internal = if order == 0 {
                    "initial".to_string()
                } else {
                    state_number += rng.usize(1..=2);
                    format!("state_{state_number}")
                };
                let mut names = job_names(dsl);
                rng.shuffle(&mut names);
                let jobs = names[..rng.usize(1..=4)]
                    .iter()
                    .map(|job_name| {
                        let step_count = rng.usize(1..=3);
                        let mut extra = EXTRA_STEPS;
                        rng.shuffle(&mut extra);
                        let steps = std::iter::once(main_step(dsl))
                            .chain(extra)
                            .take(step_count)
                            .map(|(step_name, task)| StepDef {
                                name: step_name.to_string(),
                                task,
                                identifier: identifier(rng, create_ms),
                            })
                            .collect();
                        JobDef {
                            name: job_name.to_string(),
                            identifier: identifier(rng, create_ms),
                            steps,
                        }
                    })
                    .collect();
                StageDef {
                    name: stage_name.to_string(),
                    internal,
                    identifier: order.to_string(),
                    dsl,
                    jobs,
                }
            })
            .collect();
        PipelineDef {
            index,
            id,
            name,
            project,
            stages,
            scale,
            create_ms,
            description: pick(rng, &DESCRIPTIONS),
            repo,
            codehub_id: (0..10).map(|_| rng.digit(10)).collect(),
            creator: rng.usize(..executors.max(1)),
            tags: Vec::new(),
        }
    }
}

/// Source of a run: what triggered it and which code it built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildInfo {
    pub trigger: &'static str,
    pub build_type: &'static str,
    pub target_branch: &'static str,
    pub source_branch: Option<&'static str>,
    pub tag: Option<String>,
    pub merge_id: Option<u32>,
    pub commit_id: String,
    pub message: &'static str,
}

impl BuildInfo {
    fn generate(rng: &mut Rng) -> BuildInfo {
        let roll = rng.f64();
        let trigger = if roll < 0.3 {
            "Manual"
        } else if roll < 0.6 {
            "Push"
        } else if roll < 0.75 {
            "Scheduler"
        } else if roll < 0.9 {
            "MR"
        } else {
            "CreateTag"
        };
        let mut info = BuildInfo {
            trigger,
            build_type: "branch",
            target_branch: pick(rng, &BRANCHES),
            source_branch: None,
            tag: None,
            merge_id: None,
            commit_id: hex_digits(rng, 40),
            message: pick(rng, &COMMIT_MESSAGES),
        };
        match trigger {
            "MR" => {
                info.target_branch = pick(rng, &BRANCHES[..3]);
                info.source_branch = Some(pick(rng, &SOURCE_BRANCHES));
                info.merge_id = Some(rng.u32(1..500));
            }
            "CreateTag" => {
                info.build_type = "tag";
                info.tag = Some(format!(
                    "v{}.{}.{}",
                    rng.u32(1..4),
                    rng.u32(0..10),
                    rng.u32(0..20)
                ));
            }
            _ => {}
        }
        info
    }
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failed,
    Canceled,
}

impl Outcome {
    /// Final v5 status.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Success => COMPLETED,
            Outcome::Failed => FAILED,
            Outcome::Canceled => CANCELED,
        }
    }
}

/// Start and end relative to the run start, in ms; `None` for what never happens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Span {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl Span {
    fn at(start: i64, end: i64) -> Span {
        Span {
            start: Some(start),
            end: Some(end),
        }
    }
}

/// A planned step (also used for stage gates in `pre`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepPlan {
    pub span: Span,
    /// Status while it runs.
    pub active: &'static str,
    /// Status once ended (or `INIT`/`UNSELECTED` when it never runs).
    pub fin: &'static str,
    pub message: Option<&'static str>,
}

impl StepPlan {
    fn idle(fin: &'static str) -> StepPlan {
        StepPlan {
            span: Span::default(),
            active: RUNNING,
            fin,
            message: None,
        }
    }

    fn done(start: i64, end: i64, fin: &'static str, message: Option<&'static str>) -> StepPlan {
        StepPlan {
            span: Span::at(start, end),
            active: RUNNING,
            fin,
            message,
        }
    }
}

/// A planned job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobPlan {
    pub span: Span,
    pub fin: &'static str,
    pub message: Option<&'static str>,
    pub steps: Vec<StepPlan>,
}

impl JobPlan {
    fn idle(def: &JobDef, fin: &'static str) -> JobPlan {
        JobPlan {
            span: Span::default(),
            fin,
            message: None,
            steps: def.steps.iter().map(|_| StepPlan::idle(fin)).collect(),
        }
    }
}

/// What holds a stage before its jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateKind {
    /// Manual review: run and stage `PAUSED`.
    Review,
    /// Suspension: run and stage `SUSPEND`.
    Suspend,
}

/// A gate at the start of a stage, in ms relative to the run start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Gate {
    pub kind: GateKind,
    pub start: i64,
    pub end: i64,
}

/// A planned stage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StagePlan {
    pub selected: bool,
    pub span: Span,
    pub fin: &'static str,
    pub gate: Option<Gate>,
    pub pre: Vec<StepPlan>,
    pub jobs: Vec<JobPlan>,
}

impl StagePlan {
    fn idle(def: &StageDef, fin: &'static str) -> StagePlan {
        StagePlan {
            selected: fin != UNSELECTED,
            span: Span::default(),
            fin,
            gate: None,
            // The review gate is part of the stage even when it never runs.
            pre: if def.is_review() {
                vec![StepPlan::idle(fin)]
            } else {
                Vec::new()
            },
            jobs: def.jobs.iter().map(|job| JobPlan::idle(job, fin)).collect(),
        }
    }
}

/// A run, planned to the millisecond when it is created.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunPlan {
    pub number: u64,
    pub id: String,
    /// Seed of the run's derived ids (stages, jobs, steps, dispatches).
    pub seed: u64,
    pub build: BuildInfo,
    pub executor: usize,
    /// Absolute start, epoch ms.
    pub start_ms: i64,
    /// End of the queue phase, relative.
    pub queue_ms: i64,
    /// Relative end.
    pub duration_ms: i64,
    pub outcome: Outcome,
    pub stages: Vec<StagePlan>,
}

/// Durations split by random weights; the parts add up to `total` exactly.
fn split(rng: &mut Rng, total: i64, parts: usize) -> Vec<i64> {
    let weights: Vec<f64> = (0..parts).map(|_| 0.3 + 0.7 * rng.f64()).collect();
    let sum: f64 = weights.iter().sum();
    let mut out: Vec<i64> = weights
        .iter()
        .map(|w| (total as f64 * w / sum).floor() as i64)
        .collect();
    let used: i64 = out.iter().sum();
    if let Some(last) = out.last_mut() {
        *last += total - used;
    }
    out
}

impl RunPlan {
    /// Plans a run of `def` (start time and number are set by the caller).
    fn generate(def: &PipelineDef, rng: &mut Rng, speed: f64, executors: usize) -> RunPlan {
        let id = hex_id(rng);
        let seed = rng.u64(..);
        let build = BuildInfo::generate(rng);
        let executor = rng.usize(..executors.max(1));
        let queue_ms = real_ms(5.0 + 115.0 * rng.f64(), speed);
        let count = def.stages.len();
        let unselected = (count >= 2 && rng.f64() < 0.05).then(|| rng.usize(1..count));
        let roll = rng.f64();
        // The last 4% are plain successes: the optional variations are not simulated.
        let outcome = if roll < 0.75 {
            Outcome::Success
        } else if roll < 0.90 {
            Outcome::Failed
        } else if roll < 0.96 {
            Outcome::Canceled
        } else {
            Outcome::Success
        };
        let selected: Vec<usize> = (0..count).filter(|i| Some(*i) != unselected).collect();
        let stop_stage = match outcome {
            Outcome::Success => None,
            _ => Some(pick(rng, &selected)),
        };
        let suspend_stage = if rng.f64() < 0.03 {
            let candidates: Vec<usize> = selected
                .iter()
                .copied()
                .filter(|&i| !def.stages[i].is_review())
                .collect();
            (!candidates.is_empty()).then(|| pick(rng, &candidates))
        } else {
            None
        };

        let mut cursor = queue_ms;
        let mut stopped = false;
        let mut stages = Vec::with_capacity(count);
        for (index, stage) in def.stages.iter().enumerate() {
            if Some(index) == unselected {
                stages.push(StagePlan::idle(stage, UNSELECTED));
                continue;
            }
            if stopped {
                stages.push(StagePlan::idle(stage, INIT));
                continue;
            }
            let nominal = 10.0 + def.scale * (0.2 + 0.8 * rng.f64()) * 1190.0;
            let work_ms = real_ms(nominal, speed);
            let gate = if stage.is_review() {
                Some((GateKind::Review, real_ms(60.0 + 1740.0 * rng.f64(), speed)))
            } else if suspend_stage == Some(index) {
                Some((GateKind::Suspend, real_ms(60.0 + 540.0 * rng.f64(), speed)))
            } else {
                None
            };
            let job_ms: Vec<i64> = split(rng, work_ms, stage.jobs.len())
                .into_iter()
                .map(|ms| ms.max(1))
                .collect();
            let step_ms: Vec<Vec<i64>> = stage
                .jobs
                .iter()
                .zip(&job_ms)
                .map(|(job, ms)| split(rng, *ms, job.steps.len()))
                .collect();
            let total = gate.map_or(0, |g| g.1) + job_ms.iter().sum::<i64>();
            let stop_here = stop_stage == Some(index);
            let cancel_at = (stop_here && outcome == Outcome::Canceled).then(|| {
                cursor + (((0.05 + 0.9 * rng.f64()) * total as f64) as i64).clamp(0, total - 1)
            });
            let fail_job =
                (stop_here && outcome == Outcome::Failed).then(|| rng.usize(..stage.jobs.len()));
            let failure = pick(rng, &FAILURE_MESSAGES);

            let stage_start = cursor;
            let mut fin = COMPLETED;
            let mut halted = false;
            let mut pre = Vec::new();
            if index == 0 {
                // The trigger gate of the first stage, instantaneous as in the vendor's example.
                pre.push(StepPlan::done(cursor, cursor, COMPLETED, None));
            }
            let mut gate_plan = None;
            if let Some((kind, ms)) = gate {
                let mut end = cursor + ms;
                let mut gate_fin = COMPLETED;
                if let Some(at) = cancel_at.filter(|at| *at < end) {
                    end = at;
                    gate_fin = CANCELED;
                    fin = CANCELED;
                    halted = true;
                }
                if kind == GateKind::Review {
                    pre.push(StepPlan {
                        span: Span::at(cursor, end),
                        active: PAUSED,
                        fin: gate_fin,
                        message: (gate_fin == CANCELED).then_some(CANCEL_MESSAGE),
                    });
                }
                gate_plan = Some(Gate {
                    kind,
                    start: cursor,
                    end,
                });
                cursor = end;
            }
            let mut jobs = Vec::with_capacity(stage.jobs.len());
            for (j, job) in stage.jobs.iter().enumerate() {
                if halted {
                    jobs.push(JobPlan::idle(job, INIT));
                    continue;
                }
                let job_start = cursor;
                let job_end = cursor + job_ms[j];
                let mut steps = Vec::with_capacity(job.steps.len());
                let mut step_start = job_start;
                if let Some(at) = cancel_at.filter(|at| *at < job_end) {
                    let mut cut = false;
                    for ms in &step_ms[j] {
                        let step_end = step_start + ms;
                        if cut {
                            steps.push(StepPlan::idle(INIT));
                        } else if at < step_end {
                            steps.push(StepPlan::done(
                                step_start,
                                at,
                                CANCELED,
                                Some(CANCEL_MESSAGE),
                            ));
                            cut = true;
                        } else {
                            steps.push(StepPlan::done(step_start, step_end, COMPLETED, None));
                        }
                        step_start = step_end;
                    }
                    jobs.push(JobPlan {
                        span: Span::at(job_start, at),
                        fin: CANCELED,
                        message: Some(CANCEL_MESSAGE),
                        steps,
                    });
                    fin = CANCELED;
                    halted = true;
                    cursor = at;
                    continue;
                }
                let failed = fail_job == Some(j);
                let last = step_ms[j].len().saturating_sub(1);
                for (k, ms) in step_ms[j].iter().enumerate() {
                    let step_end = step_start + ms;
                    steps.push(if failed && k == last {
                        StepPlan::done(step_start, step_end, FAILED, Some(failure))
                    } else {
                        StepPlan::done(step_start, step_end, COMPLETED, None)
                    });
                    step_start = step_end;
                }
                jobs.push(JobPlan {
                    span: Span::at(job_start, job_end),
                    fin: if failed { FAILED } else { COMPLETED },
                    message: failed.then_some(failure),
                    steps,
                });
                cursor = job_end;
                if failed {
                    fin = FAILED;
                    halted = true;
                }
            }
            stages.push(StagePlan {
                selected: true,
                span: Span::at(stage_start, cursor),
                fin,
                gate: gate_plan,
                pre,
                jobs,
            });
            stopped = halted;
        }
        RunPlan {
            number: 0,
            id,
            seed,
            build,
            executor,
            start_ms: 0,
            queue_ms,
            duration_ms: cursor,
            outcome,
            stages,
        }
    }

    /// Absolute end, epoch ms.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms
    }

    /// True when the run has ended at `t`.
    pub fn is_done(&self, t: i64) -> bool {
        t >= self.end_ms()
    }

    /// Status and last change at `t`, without building a full view for finished runs.
    pub fn summary(&self, t: i64) -> (&'static str, i64) {
        if self.is_done(t) {
            (self.outcome.status(), self.end_ms())
        } else {
            let view = self.view(t);
            (view.status, view.update)
        }
    }

    /// The run as the service would report it at `t` (epoch ms, at or after the start).
    pub fn view(&self, t: i64) -> RunView {
        let base = self.start_ms;
        let rel = t - base;
        let stages: Vec<StageView> = self
            .stages
            .iter()
            .map(|stage| stage.view(base, rel))
            .collect();
        let status = if rel >= self.duration_ms {
            self.outcome.status()
        } else if rel < self.queue_ms {
            // Initialisation first, then the wait for an executor.
            if rel < self.queue_ms / 4 {
                INIT
            } else {
                QUEUED
            }
        } else {
            stages
                .iter()
                .map(|s| s.item.status)
                .find(|s| [RUNNING, PAUSED, SUSPEND].contains(s))
                .unwrap_or(RUNNING)
        };
        let end = (rel >= self.duration_ms).then_some(self.end_ms());
        let pause = stages.iter().filter_map(|s| s.pause).next_back();
        let mut update = base;
        if rel >= self.queue_ms {
            update = update.max(base + self.queue_ms);
        }
        for stage in &stages {
            let items = std::iter::once(&stage.item).chain(&stage.pre).chain(
                stage
                    .jobs
                    .iter()
                    .flat_map(|j| std::iter::once(&j.item).chain(&j.steps)),
            );
            for item in items {
                update = update
                    .max(item.start.unwrap_or(0))
                    .max(item.end.unwrap_or(0));
            }
        }
        RunView {
            status,
            start: base,
            end,
            pause,
            update,
            stages,
        }
    }
}

/// Status, absolute times and message of a stage, job or step at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ItemView {
    pub status: &'static str,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub message: Option<&'static str>,
}

fn item_view(
    span: Span,
    base: i64,
    rel: i64,
    active: &'static str,
    fin: &'static str,
    message: Option<&'static str>,
) -> ItemView {
    match (span.start, span.end) {
        (Some(start), Some(end)) if rel >= end => ItemView {
            status: fin,
            start: Some(base + start),
            end: Some(base + end),
            message,
        },
        (Some(start), _) if rel >= start => ItemView {
            status: active,
            start: Some(base + start),
            end: None,
            message: None,
        },
        _ => ItemView {
            status: if fin == UNSELECTED { UNSELECTED } else { INIT },
            start: None,
            end: None,
            message: None,
        },
    }
}

/// A job at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobView {
    pub item: ItemView,
    pub steps: Vec<ItemView>,
}

/// A stage at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageView {
    pub item: ItemView,
    pub selected: bool,
    /// Start of the manual review, once it started.
    pub pause: Option<i64>,
    pub pre: Vec<ItemView>,
    pub jobs: Vec<JobView>,
}

impl StagePlan {
    fn view(&self, base: i64, rel: i64) -> StageView {
        let gate_active = self.gate.filter(|g| g.start <= rel && rel < g.end);
        let active = match gate_active.map(|g| g.kind) {
            Some(GateKind::Review) => PAUSED,
            Some(GateKind::Suspend) => SUSPEND,
            None => RUNNING,
        };
        let pause = self
            .gate
            .filter(|g| g.kind == GateKind::Review && g.start <= rel)
            .map(|g| base + g.start);
        StageView {
            item: item_view(self.span, base, rel, active, self.fin, None),
            selected: self.selected,
            pause,
            pre: self
                .pre
                .iter()
                .map(|s| item_view(s.span, base, rel, s.active, s.fin, s.message))
                .collect(),
            jobs: self
                .jobs
                .iter()
                .map(|job| JobView {
                    item: item_view(job.span, base, rel, RUNNING, job.fin, job.message),
                    steps: job
                        .steps
                        .iter()
                        .map(|s| item_view(s.span, base, rel, s.active, s.fin, s.message))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A run at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunView {
    /// v5 run status.
    pub status: &'static str,
    pub start: i64,
    pub end: Option<i64>,
    /// Start of the latest manual review.
    pub pause: Option<i64>,
    /// Last change so far.
    pub update: i64,
    pub stages: Vec<StageView>,
}

/// The runs of one pipeline, generated as time passes.
pub(crate) struct RunLog {
    rng: Rng,
    runs: VecDeque<RunPlan>,
    next_number: u64,
    next_start_ms: i64,
}

/// Real gap after a run; (duration + gap) is at least 10 nominal minutes. With a running
/// share, the gap is drawn around the length that makes runs take that share of the time.
fn gap_ms(rng: &mut Rng, duration_ms: i64, speed: f64, shape: &Shape) -> i64 {
    if let Some(share) = shape.share() {
        let mean = duration_ms as f64 * (1.0 / share - 1.0);
        return ((mean * (0.5 + rng.f64())) as i64).max(1);
    }
    let gap = real_ms(120.0 + 3480.0 * rng.f64(), speed);
    gap.max(real_ms(600.0, speed) - duration_ms).max(1)
}

impl RunLog {
    /// History runs that ended 2 to 26 h before `started_at_ms`, then a first live run
    /// already under way at `started_at_ms` (with a running share: under way with that
    /// probability, else ended a while before).
    fn new(
        def: &PipelineDef,
        mut rng: Rng,
        speed: f64,
        started_at_ms: i64,
        executors: usize,
        shape: &Shape,
    ) -> RunLog {
        let history_count = rng.usize(0..=3);
        let history: Vec<(RunPlan, i64)> = (0..history_count)
            .map(|_| {
                let plan = RunPlan::generate(def, &mut rng, speed, executors);
                let gap = gap_ms(&mut rng, plan.duration_ms, speed, shape);
                (plan, gap)
            })
            .collect();
        let mut first = RunPlan::generate(def, &mut rng, speed, executors);
        let first_gap = if shape.share().is_some() {
            // A random point of the run's cycle (run then gap) is now.
            let gap = gap_ms(&mut rng, first.duration_ms, speed, shape);
            let phase = rng.f64() * (first.duration_ms + gap) as f64;
            first.start_ms = started_at_ms - phase as i64;
            gap
        } else {
            let progress = 0.9 * rng.f64();
            first.start_ms = started_at_ms - (progress * first.duration_ms as f64) as i64;
            gap_ms(&mut rng, first.duration_ms, speed, shape)
        };
        let latest_end = started_at_ms - 2 * HOUR_MS - (rng.f64() * 4.0 * HOUR_MS as f64) as i64;
        let earliest_end = started_at_ms - 26 * HOUR_MS;

        // Placed backwards from the newest; runs that would end too early are dropped.
        let mut kept = Vec::new();
        let mut next_start = first.start_ms;
        for (mut plan, gap) in history.into_iter().rev() {
            let end = latest_end.min(next_start - gap);
            if end < earliest_end {
                break;
            }
            plan.start_ms = end - plan.duration_ms;
            next_start = plan.start_ms;
            kept.push(plan);
        }
        kept.reverse();
        let mut runs: VecDeque<RunPlan> = kept.into();
        for (i, plan) in runs.iter_mut().enumerate() {
            plan.number = i as u64 + 1;
        }
        first.number = runs.len() as u64 + 1;
        let next_start_ms = first.end_ms() + first_gap;
        let next_number = first.number + 1;
        runs.push_back(first);
        RunLog {
            rng,
            runs,
            next_number,
            next_start_ms,
        }
    }

    /// No history: the first run starts at `now_ms` (a pipeline created at run time).
    fn fresh(
        def: &PipelineDef,
        mut rng: Rng,
        speed: f64,
        now_ms: i64,
        executors: usize,
        shape: &Shape,
    ) -> RunLog {
        let mut first = RunPlan::generate(def, &mut rng, speed, executors);
        first.number = 1;
        first.start_ms = now_ms;
        let next_start_ms = first.end_ms() + gap_ms(&mut rng, first.duration_ms, speed, shape);
        RunLog {
            rng,
            runs: VecDeque::from([first]),
            next_number: 2,
            next_start_ms,
        }
    }

    /// Plans every run that starts by `now_ms`.
    fn advance(
        &mut self,
        def: &PipelineDef,
        speed: f64,
        executors: usize,
        shape: &Shape,
        now_ms: i64,
    ) {
        while self.next_start_ms <= now_ms {
            let mut plan = RunPlan::generate(def, &mut self.rng, speed, executors);
            plan.number = self.next_number;
            plan.start_ms = self.next_start_ms;
            let gap = gap_ms(&mut self.rng, plan.duration_ms, speed, shape);
            self.next_start_ms = plan.end_ms() + gap;
            self.next_number += 1;
            self.runs.push_back(plan);
            if self.runs.len() > MAX_RUNS {
                self.runs.pop_front();
            }
        }
    }

    /// Kept runs started by `t`, oldest first.
    pub fn started(&self, t: i64) -> impl DoubleEndedIterator<Item = &RunPlan> {
        self.runs.iter().filter(move |r| r.start_ms <= t)
    }

    /// The newest run started by `t`.
    pub fn latest(&self, t: i64) -> Option<&RunPlan> {
        self.started(t).next_back()
    }
}

/// A CodeArts project.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Project {
    pub id: String,
    pub name: String,
    /// Indices into [`World::pipelines`].
    pub pipelines: Vec<usize>,
}

/// A user who starts runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Executor {
    pub id: String,
    pub name: &'static str,
}

/// Everything the simulator knows.
pub(crate) struct World {
    pub started_at_ms: i64,
    pub speed: f64,
    /// Seed of everything generated, kept for pipelines created at run time.
    seed: u64,
    /// Stage counts and running share.
    shape: Shape,
    pub domain_id: String,
    pub iam_project_id: String,
    pub projects: Vec<Project>,
    pub pipelines: Vec<PipelineDef>,
    pub executors: Vec<Executor>,
    logs: Vec<Mutex<RunLog>>,
    pipeline_index: HashMap<String, usize>,
    project_index: HashMap<String, usize>,
}

impl World {
    /// A world of `pipelines` spread round-robin over `projects`, starting at `started_at_ms`.
    #[cfg(test)]
    pub fn new(
        pipelines: usize,
        projects: usize,
        seed: u64,
        speed: f64,
        started_at_ms: i64,
    ) -> World {
        World::shaped(
            pipelines,
            projects,
            seed,
            speed,
            started_at_ms,
            Shape::default(),
        )
    }

    /// Like [`World::new`], with stage counts and a running share from `shape`.
    pub fn shaped(
        pipelines: usize,
        projects: usize,
        seed: u64,
        speed: f64,
        started_at_ms: i64,
        shape: Shape,
    ) -> World {
        let projects = projects.max(1);
        let mut rng = Rng::with_seed(mix(seed, u64::MAX));
        let domain_id = hex_id(&mut rng);
        let iam_project_id = hex_id(&mut rng);
        let executors: Vec<Executor> = EXECUTOR_NAMES
            .iter()
            .map(|name| Executor {
                id: hex_id(&mut rng),
                name,
            })
            .collect();
        let mut project_list: Vec<Project> = (0..projects)
            .map(|i| Project {
                id: hex_id(&mut rng),
                name: if i < PROJECT_NAMES.len() {
                    PROJECT_NAMES[i].to_string()
                } else {
                    format!("{}-{}", PROJECT_NAMES[i % PROJECT_NAMES.len()], i + 1)
                },
                pipelines: Vec::new(),
            })
            .collect();
        let mut defs = Vec::with_capacity(pipelines);
        let mut logs = Vec::with_capacity(pipelines);
        for index in 0..pipelines {
            let project = index % projects;
            let mut def_rng = Rng::with_seed(mix(seed, 2 * index as u64));
            let mut def = PipelineDef::generate(
                index,
                project,
                &mut def_rng,
                started_at_ms,
                executors.len(),
                &shape,
            );
            def.tags = tags_for(seed, index);
            let run_rng = Rng::with_seed(mix(seed, 2 * index as u64 + 1));
            logs.push(Mutex::new(RunLog::new(
                &def,
                run_rng,
                speed,
                started_at_ms,
                executors.len(),
                &shape,
            )));
            project_list[project].pipelines.push(index);
            defs.push(def);
        }
        World {
            started_at_ms,
            speed,
            seed,
            shape,
            domain_id,
            iam_project_id,
            pipeline_index: defs.iter().map(|d| (d.id.clone(), d.index)).collect(),
            project_index: project_list
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id.clone(), i))
                .collect(),
            projects: project_list,
            pipelines: defs,
            executors,
            logs,
        }
    }

    /// Creates a pipeline in `project` whose first run starts at `now_ms`; returns its index.
    pub fn add_pipeline(
        &mut self,
        project: usize,
        name: Option<String>,
        tags: Option<Vec<String>>,
        now_ms: i64,
    ) -> usize {
        let index = self.pipelines.len();
        let seed = self.seed;
        let mut def_rng = Rng::with_seed(mix(seed, 2 * index as u64));
        let mut def = PipelineDef::generate(
            index,
            project,
            &mut def_rng,
            now_ms,
            self.executors.len(),
            &self.shape,
        );
        def.create_ms = now_ms;
        if let Some(name) = name {
            def.name = name;
        }
        def.tags = tags.unwrap_or_else(|| tags_for(seed, index));
        let run_rng = Rng::with_seed(mix(seed, 2 * index as u64 + 1));
        let log = RunLog::fresh(
            &def,
            run_rng,
            self.speed,
            now_ms,
            self.executors.len(),
            &self.shape,
        );
        self.pipeline_index.insert(def.id.clone(), index);
        self.projects[project].pipelines.push(index);
        self.pipelines.push(def);
        self.logs.push(Mutex::new(log));
        index
    }

    /// Deletes the pipeline with `id`: every API forgets it. False when there is none.
    pub fn remove_pipeline(&mut self, id: &str) -> bool {
        let Some(index) = self.pipeline_index.remove(id) else {
            return false;
        };
        for project in &mut self.projects {
            project.pipelines.retain(|&i| i != index);
        }
        // The definition stays so indices stay valid; its runs are no longer needed.
        if let Some(log) = self.logs.get_mut(index) {
            let log = log.get_mut().unwrap_or_else(|e| e.into_inner());
            log.runs.clear();
            log.next_start_ms = i64::MAX;
        }
        true
    }

    /// Index of the project with `id`.
    pub fn project(&self, id: &str) -> Option<usize> {
        self.project_index.get(id).copied()
    }

    /// Index of the pipeline with `id`.
    pub fn pipeline(&self, id: &str) -> Option<usize> {
        self.pipeline_index.get(id).copied()
    }

    /// Runs `f` on the runs of pipeline `index`, brought up to `now_ms` first.
    pub fn with_runs<R>(
        &self,
        index: usize,
        now_ms: i64,
        f: impl FnOnce(&PipelineDef, &RunLog) -> R,
    ) -> R {
        let def = &self.pipelines[index];
        // A panic elsewhere never leaves a log half-updated (push then pop), so poison is harmless.
        let mut log = self.logs[index].lock().unwrap_or_else(|e| e.into_inner());
        log.advance(def, self.speed, self.executors.len(), &self.shape, now_ms);
        f(def, &log)
    }

    /// The executor of a run (a fallback name if the pool is somehow empty).
    pub fn executor(&self, index: usize) -> (&str, &str) {
        self.executors
            .get(index)
            .map_or(("", "unknown"), |e| (e.id.as_str(), e.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_800_000_000_000;

    fn world(seed: u64, speed: f64) -> World {
        World::new(24, 2, seed, speed, START)
    }

    fn all_runs(world: &World, index: usize, t: i64) -> Vec<RunPlan> {
        world.with_runs(index, t, |_, log| log.started(t).cloned().collect())
    }

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let (a, b) = (world(7, 1.0), world(7, 1.0));
        assert_eq!(a.pipelines, b.pipelines);
        assert_eq!(a.projects, b.projects);
        let later = START + 48 * HOUR_MS;
        for i in 0..24 {
            assert_eq!(all_runs(&a, i, later), all_runs(&b, i, later));
        }
        let c = world(8, 1.0);
        assert_ne!(a.pipelines[0].id, c.pipelines[0].id);
    }

    #[test]
    fn a_pipeline_does_not_depend_on_the_order_of_requests() {
        let (a, b) = (world(3, 10.0), world(3, 10.0));
        // `a` is asked often about pipeline 0, `b` only once, much later.
        for step in 0..50 {
            all_runs(&a, 0, START + step * 60_000);
            all_runs(&a, 1, START + step * 30_000);
        }
        let later = START + 6 * HOUR_MS;
        assert_eq!(all_runs(&a, 1, later), all_runs(&b, 1, later));
        assert_eq!(all_runs(&a, 0, later), all_runs(&b, 0, later));
    }

    #[test]
    fn names_and_ids_are_unique_and_well_formed() {
        let w = world(1, 1.0);
        let mut names: Vec<&str> = w.pipelines.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 24);
        assert!(w.pipelines.iter().any(|p| !p.name.is_ascii()));
        assert!(
            w.pipelines
                .iter()
                .any(|p| p.stages.iter().any(StageDef::is_review))
        );
        for p in &w.pipelines {
            assert_eq!(p.id.len(), 32);
            assert!(
                p.id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!((2..=8).contains(&p.stages.len()));
            let mut stage_names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            stage_names.sort_unstable();
            stage_names.dedup();
            assert_eq!(stage_names.len(), p.stages.len(), "{}", p.name);
            assert_eq!(p.stages[0].internal, "initial");
            assert!(p.stages.iter().all(|s| (1..=4).contains(&s.jobs.len())));
        }
    }

    #[test]
    fn history_ends_2_to_26_hours_before_start_and_a_live_run_is_under_way() {
        let w = world(11, 1.0);
        for i in 0..24 {
            let runs = all_runs(&w, i, START);
            let (live, history) = runs.split_last().expect("a live run");
            assert!(live.start_ms <= START);
            for (n, run) in runs.iter().enumerate() {
                assert_eq!(run.number, n as u64 + 1);
            }
            for run in history {
                assert!(run.end_ms() <= START - 2 * HOUR_MS);
                assert!(run.end_ms() >= START - 26 * HOUR_MS);
            }
            assert!(!live.is_done(START - 1) || live.duration_ms == 0);
        }
    }

    #[test]
    fn runs_are_sequential_and_leave_ten_nominal_minutes() {
        let w = world(5, 60.0);
        let later = START + 12 * HOUR_MS;
        let ten_minutes = 600_000 / 60;
        for i in 0..24 {
            let runs = all_runs(&w, i, later);
            assert!(runs.len() > 20);
            for pair in runs.windows(2) {
                assert!(pair[0].end_ms() < pair[1].start_ms);
                assert!(pair[1].start_ms - pair[0].start_ms >= ten_minutes);
                assert_eq!(pair[0].number + 1, pair[1].number);
            }
        }
    }

    #[test]
    fn a_shaped_world_has_its_mean_stage_count_and_running_share() {
        let shape = Shape {
            stages: Some(6),
            running_share: Some(0.05),
        };
        let w = World::shaped(2000, 10, 3, 1.0, START, shape);
        let stages: usize = w.pipelines.iter().map(|p| p.stages.len()).sum();
        let mean = stages as f64 / 2000.0;
        assert!((5.8..6.2).contains(&mean), "{mean}");
        assert!(
            w.pipelines
                .iter()
                .all(|p| (4..=8).contains(&p.stages.len()))
        );
        for t in [START, START + 3 * HOUR_MS, START + 30 * HOUR_MS] {
            let running = (0..2000)
                .filter(|&i| {
                    w.with_runs(i, t, |_, log| log.latest(t).is_some_and(|r| !r.is_done(t)))
                })
                .count();
            let share = running as f64 / 2000.0;
            assert!((0.03..0.07).contains(&share), "{share} at {t}");
        }
        assert_eq!(Shape::default().stage_range(), 2..=8);
        let tiny = Shape {
            stages: Some(3),
            ..Shape::default()
        };
        assert_eq!(tiny.stage_range(), 2..=4);
    }

    #[test]
    fn memory_is_bounded() {
        let w = World::new(1, 1, 1, 1000.0, START);
        let runs = all_runs(&w, 0, START + 2 * HOUR_MS);
        assert_eq!(runs.len(), MAX_RUNS);
        assert!(runs[0].number > 1);
    }

    #[test]
    fn outcomes_follow_the_intended_mix() {
        let w = World::new(40, 1, 9, 10.0, START);
        let later = START + 24 * HOUR_MS;
        let (mut total, mut failed, mut canceled, mut unselected, mut paused) = (0, 0, 0, 0, 0);
        for i in 0..40 {
            for run in all_runs(&w, i, later) {
                total += 1;
                match run.outcome {
                    Outcome::Failed => failed += 1,
                    Outcome::Canceled => canceled += 1,
                    Outcome::Success => {}
                }
                unselected += usize::from(run.stages.iter().any(|s| !s.selected));
                paused += usize::from(run.stages.iter().any(|s| s.gate.is_some()));
            }
        }
        let share = |n: usize| n as f64 / total as f64;
        assert!(total > 1000, "{total}");
        assert!((0.10..0.20).contains(&share(failed)), "{}", share(failed));
        assert!(
            (0.03..0.09).contains(&share(canceled)),
            "{}",
            share(canceled)
        );
        assert!(
            (0.02..0.08).contains(&share(unselected)),
            "{}",
            share(unselected)
        );
        assert!(paused > 0);
    }

    fn find_run(w: &World, pred: impl Fn(&RunPlan) -> bool) -> RunPlan {
        let later = START + 24 * HOUR_MS;
        (0..w.pipelines.len())
            .flat_map(|i| all_runs(w, i, later))
            .find(|r| pred(r))
            .expect("such a run")
    }

    #[test]
    fn a_failed_run_leaves_later_stages_and_jobs_untouched() {
        let w = world(2, 10.0);
        let run = find_run(&w, |r| {
            r.outcome == Outcome::Failed && r.stages.last().is_some_and(|s| s.fin == INIT)
        });
        let view = run.view(run.end_ms() + 1);
        assert_eq!(view.status, FAILED);
        assert_eq!(view.end, Some(run.end_ms()));
        let failed_at = view
            .stages
            .iter()
            .position(|s| s.item.status == FAILED)
            .expect("failed stage");
        let failed_stage = &view.stages[failed_at];
        assert_eq!(failed_stage.item.end, Some(run.end_ms()));
        let failed_job = failed_stage
            .jobs
            .iter()
            .position(|j| j.item.status == FAILED)
            .expect("failed job");
        assert!(failed_stage.jobs[failed_job].item.message.is_some());
        for job in &failed_stage.jobs[failed_job + 1..] {
            assert_eq!(
                (job.item.status, job.item.start, job.item.end),
                (INIT, None, None)
            );
        }
        for stage in &view.stages[failed_at + 1..] {
            assert!(stage.item.status == INIT || stage.item.status == UNSELECTED);
            assert_eq!((stage.item.start, stage.item.end), (None, None));
            assert!(stage.jobs.iter().all(|j| j.item.start.is_none()));
        }
    }

    #[test]
    fn a_canceled_run_stops_where_it_was_canceled() {
        let w = world(2, 10.0);
        let run = find_run(&w, |r| r.outcome == Outcome::Canceled);
        let view = run.view(run.end_ms());
        assert_eq!(view.status, CANCELED);
        let stage = view
            .stages
            .iter()
            .find(|s| s.item.status == CANCELED)
            .expect("canceled stage");
        assert_eq!(stage.item.end, Some(run.end_ms()));
        let canceled_items = stage
            .jobs
            .iter()
            .filter(|j| j.item.status == CANCELED)
            .count()
            + stage.pre.iter().filter(|p| p.status == CANCELED).count();
        assert_eq!(canceled_items, 1);
    }

    #[test]
    fn states_progress_in_order() {
        let w = world(4, 10.0);
        let run = find_run(&w, |r| {
            r.stages
                .iter()
                .any(|s| s.gate.is_some_and(|g| g.kind == GateKind::Review))
        });
        let gate = run.stages.iter().find_map(|s| s.gate).expect("gate");
        assert_eq!(run.view(run.start_ms).status, INIT);
        assert_eq!(run.view(run.start_ms + run.queue_ms - 1).status, QUEUED);
        let during = run.view(run.start_ms + gate.start);
        assert_eq!(during.status, PAUSED);
        assert_eq!(during.pause, Some(run.start_ms + gate.start));
        assert!(during.end.is_none());
        let first = run.view(run.start_ms + run.queue_ms);
        assert_eq!(first.status, RUNNING);
        assert_eq!(first.stages[0].item.status, RUNNING);
        assert!(first.stages[1..].iter().all(|s| s.item.start.is_none()));
        let done = run.view(run.end_ms());
        assert_eq!(done.status, run.outcome.status());
        assert_eq!(done.update, run.end_ms());
        // Completed stages end where the next one starts.
        let ran: Vec<&StageView> = done
            .stages
            .iter()
            .filter(|s| s.item.start.is_some())
            .collect();
        for pair in ran.windows(2) {
            assert_eq!(pair[0].item.end, pair[1].item.start);
        }
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_id(5, &[1, 2]), derived_id(5, &[1, 2]));
        assert_ne!(derived_id(5, &[1, 2]), derived_id(5, &[2, 1]));
        assert_eq!(derived_id(5, &[1]).len(), 32);
    }
}
