//! The pools generated names, messages, branches and commits are drawn from, in several
//! languages, so that the exporter meets non-ASCII text everywhere.

pub(super) const CANCEL_MESSAGE: &str = "流水线已被用户取消 (canceled by user)";

pub(super) const FAILURE_MESSAGES: [&str; 6] = [
    "Build failed: exit code 1",
    "单元测试失败: 3 个用例未通过",
    "部署超时, 请检查目标主机",
    "Échec de la compilation: erreur de syntaxe",
    "CodeCheck: 发现 2 个严重问题",
    "Helm upgrade failed: timed out waiting for the condition",
];

pub(super) const PROJECT_NAMES: [&str; 6] = [
    "电商平台",
    "Plateforme Données",
    "mobile-apps",
    "基础设施",
    "Zahlungsverkehr",
    "内部工具",
];

/// Prefix of a pipeline name and the repository it builds.
pub(super) const PIPELINE_SUBJECTS: [(&str, &str); 12] = [
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
pub(super) const PIPELINE_KINDS: [&str; 8] = [
    "build",
    "发布",
    "deploy",
    "CI",
    "夜间构建",
    "release",
    "流水线",
    "intégration",
];
pub(super) const SEPARATORS: [&str; 4] = ["-", "·", " ", "_"];
pub(super) const DESCRIPTIONS: [&str; 5] = [
    "",
    "主干构建与发布",
    "Nightly build and tests",
    "Chaîne de livraison continue",
    "每次合入后自动部署到预发环境",
];

/// Tags of pipelines; drawn from their own RNG so adding them changed no existing world.
pub(super) const TAGS: [&str; 5] = ["backend", "frontend", "nightly", "发布", "mobile"];
/// Salt of the tag RNG of each pipeline.
pub(super) const TAG_SALT: u64 = 0x7461_6773;

pub(super) const INITIAL_STAGES: [&str; 4] = ["源代码", "代码检出", "Checkout", "准备"];
pub(super) const REVIEW_STAGES: [&str; 3] = ["人工审核", "Revue manuelle", "发布审批"];
/// Non-initial, non-review stages in the order a pipeline would run them.
pub(super) const WORK_STAGES: [(&str, &str); 15] = [
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

pub(super) fn job_names(dsl: &str) -> [&'static str; 4] {
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
pub(super) fn main_step(dsl: &str) -> (&'static str, &'static str) {
    match dsl {
        "initial" => ("代码下载", "official_devcloud_checkout"),
        "check" => ("代码检查", "official_devcloud_codeCheck"),
        "build" => ("编译构建", "official_devcloud_cloudBuild"),
        "test" => ("测试执行", "official_devcloud_apiTest"),
        "review" => ("发送通知", "official_devcloud_notify"),
        _ => ("部署", "official_devcloud_deploy"),
    }
}

pub(super) const EXTRA_STEPS: [(&str, &str); 3] = [
    ("执行Shell", "official_shell_plugin"),
    ("上传制品", "official_devcloud_uploadArtifact"),
    ("Run command", "official_shell_plugin"),
];

pub(super) const EXECUTOR_NAMES: [&str; 6] = [
    "张伟",
    "devops-bot",
    "Zoë Martin",
    "李娜",
    "ci-robot",
    "王芳",
];

pub(super) const BRANCHES: [&str; 6] = [
    "master",
    "main",
    "develop",
    "release/2.1",
    "feature/x",
    "feature/支付重构",
];
pub(super) const SOURCE_BRANCHES: [&str; 3] = ["feature/x", "feature/支付重构", "bugfix/timeout"];
pub(super) const COMMIT_MESSAGES: [&str; 6] = [
    "新建文件 Dockerfile",
    "fix: retry on 429",
    "修复登录超时问题",
    "feat: ajout de l'export CSV",
    "chore: bump dependencies",
    "重构订单状态机",
];

/// E-mail addresses of the executors (same order as [`EXECUTOR_NAMES`]), as commit authors.
pub(super) const EXECUTOR_EMAILS: [&str; 6] = [
    "zhang.wei@example.com",
    "devops-bot@example.com",
    "zoe.martin@example.com",
    "li.na@example.com",
    "ci-robot@example.com",
    "wang.fang@example.com",
];

/// Services of the deployment pipelines, named `{service}-deploy-{environment}`.
pub(super) const DEPLOY_SERVICES: [&str; 6] = [
    "order-service",
    "payment-gateway",
    "user-center",
    "inventory",
    "search-engine",
    "push-service",
];
/// Environments of the deployment pipelines, taken in turn.
pub(super) const DEPLOY_ENVIRONMENTS: [&str; 2] = ["prod", "staging"];
