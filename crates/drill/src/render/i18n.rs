//! The words of the rendered reports, in English and Simplified Chinese.
//!
//! Every human-readable string the renderers produce (headings, labels, table
//! headers, verdict and outcome words, phase names, chart titles and legends,
//! the renderer's own sentences) is a [`Msg`] with both texts side by side in
//! [`catalog!`]: a key without its Chinese or English text does not compile, and
//! the tests check each pair (non-empty, Chinese where it must be, the same
//! placeholders). Report data (site names, tags, replies, step names, finding
//! titles written by the runner) is never translated: report.json is the same
//! whatever the language, and each rendering is a view of it.
//!
//! This module must never hold markup: the texts are printed unescaped by both
//! views, so they contain no HTML or Markdown syntax (a test checks it), and
//! anything that needs markup is passed in as a `{n}` argument by the view.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The language of a rendered report. `report.json` has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Zh];

    /// The name in plans and on the command line: `en`, `zh`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The BCP 47 tag for the HTML `lang` attribute: `en`, `zh-CN`.
    pub fn html_tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The text of a message.
    pub(crate) fn t(self, msg: Msg) -> &'static str {
        let (en, zh) = msg.texts();
        match self {
            Lang::En => en,
            Lang::Zh => zh,
        }
    }

    /// A message with its `{0}`, `{1}`, ... replaced by `args`, in one pass (an
    /// argument that contains `{1}` stays as it is). A placeholder without an
    /// argument is a bug in the caller.
    pub(crate) fn fmt(self, msg: Msg, args: &[&str]) -> String {
        let template = self.t(msg);
        let mut out = String::with_capacity(template.len() + args.iter().map(|a| a.len()).sum::<usize>());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('}').expect("a catalog placeholder is closed (checked by the catalog tests)");
            let index: usize =
                after[..close].parse().expect("a catalog placeholder is a number (checked by the catalog tests)");
            assert!(index < args.len(), "{msg:?} needs argument {index}, got {}", args.len());
            out.push_str(args[index]);
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A language name that is neither `zh` nor `en`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a report language: use zh or en")]
pub struct UnknownLang(pub String);

impl FromStr for Lang {
    type Err = UnknownLang;
    fn from_str(s: &str) -> Result<Lang, UnknownLang> {
        Lang::ALL.into_iter().find(|l| l.code() == s).ok_or_else(|| UnknownLang(s.to_string()))
    }
}

/// Declares [`Msg`] with one variant per entry and both texts of each, so a
/// message cannot exist in one language only.
macro_rules! catalog {
    ($( $(#[$doc:meta])* $key:ident => $en:literal, $zh:literal; )*) => {
        /// One message of the rendered reports; its texts are in this module.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Msg { $( $(#[$doc])* $key, )* }

        impl Msg {
            /// Every message, for the catalog tests.
            #[cfg(test)]
            pub(crate) const ALL: &'static [Msg] = &[ $( Msg::$key, )* ];

            /// (English, Simplified Chinese).
            const fn texts(self) -> (&'static str, &'static str) {
                match self { $( Msg::$key => ($en, $zh), )* }
            }
        }
    };
}

catalog! {
    // ------------------------------------------------------------ punctuation
    /// Between a label and its value.
    Colon => ": ", "：";

    // ------------------------------------------------------------- verdicts
    VerdictPassed => "passed", "通过";
    VerdictFailed => "failed", "未通过";
    VerdictAborted => "aborted", "已中止";
    VerdictNotePassed => "every objective met, every check passed", "所有目标均已达成，所有检查均已通过";
    VerdictNoteFailed => "an objective or a check failed", "有目标未达成或检查未通过";
    VerdictNoteAborted => "the drill stopped early and rolled back", "演练提前停止并已回滚";

    // --------------------------------------------------------------- phases
    PhaseConfirm => "1. Event confirmation and notification", "1. 事件确认与通知";
    PhaseDecide => "2. Decision and start of the switchover", "2. 决策与启动切换";
    PhasePrepare => "3. Resource preparation and synchronisation", "3. 资源准备与同步";
    PhaseDns => "4. DNS change", "4. DNS 切换";
    PhaseVerify => "5. Service verification and user notification", "5. 服务验证与用户通知";
    PhaseReview => "6. Review and archive", "6. 复盘与归档";
    BeforeFirstStep => "Before the first step", "第一步之前";
    NoPhase => "no phase", "无阶段";

    // ----------------------------------------------------------- RTO phases
    RtoDetect => "Detect", "检测到故障";
    RtoElect => "Elect", "选出新主站点";
    RtoDnsCommitted => "DNS committed", "DNS 变更已提交";
    RtoDnsServed => "DNS served", "DNS 已生效";
    RtoFirstSmtp => "First SMTP 250", "首次 SMTP 250";
    RtoFirstImap => "First IMAP fetch", "首次 IMAP 读取";
    RtoTotal => "Total", "合计";

    // --------------------------------------------------------- words in cells
    OutcomeOk => "ok", "成功";
    OutcomeDeferred => "deferred", "延迟";
    OutcomeRefused => "refused", "拒绝";
    OutcomeTimeout => "timeout", "超时";
    OutcomeUnreachable => "unreachable", "不可达";
    StepDone => "done", "完成";
    StepFailed => "failed", "失败";
    StepSkipped => "skipped", "跳过";
    SeverityCritical => "critical", "严重";
    SeverityWarning => "warning", "警告";
    SourceDrill => "drill", "演练";
    SourceCluster => "cluster", "集群";
    SourceProbe => "probe", "探测";
    Met => "met", "达成";
    Missed => "missed", "未达成";
    NotMeasured => "not measured", "未测得";
    NotSeen => "not seen", "未观测到";
    NoFailure => "no failure", "无故障";
    NoSite => "no site", "无站点";
    RollbackTag => "rollback", "回滚";
    /// The unit `messages` of an objective (other units are printed as they are).
    UnitMessages => "messages", "封邮件";

    // ------------------------------------------------------------- headings
    ReportTitle => "Drill report: {0}", "演练报告：{0}";
    /// Markdown's verdict line: the verdict word, then its note.
    VerdictLine => "Verdict: {0}, {1}", "结论：{0}，{1}";
    /// The HTML page title: the verdict word, then the plan name.
    PageTitle => "Drill {0}: {1}", "演练{0}：{1}";
    AbortReason => "Abort reason", "中止原因";
    Summary => "Summary", "概要";
    Objectives => "Objectives", "目标";
    RecoveryTime => "Recovery time (RTO)", "恢复时间 (RTO)";
    RecoveryPoint => "Recovery point (RPO)", "恢复点 (RPO)";
    ServiceSeen => "Service seen by clients", "客户端看到的服务";
    LongestGapPerProtocol => "Longest gap per protocol", "各协议最长中断";
    Probes => "Probes", "探测";
    LoadHeading => "Load: throughput and latency before, during and after the fault", "负载：故障前、故障中、故障后的吞吐量与延迟";
    Findings => "Findings", "发现";
    RunbookPhases => "Runbook phases", "预案阶段";
    ApprovalsAndConfirmations => "Approvals and confirmations", "审批与确认";
    ManualStepsConfirmed => "Manual steps confirmed", "已确认的人工步骤";
    Environment => "Environment", "环境";

    // ------------------------------------------------------------ sentences
    RtoIntro => "Each phase in time after the first fault, injected at {0} ({1} into the drill).",
        "各阶段的时间均从首次故障起算；首次故障注入于 {0}（演练开始后 {1}）。";
    /// Right after the RTO introduction (the English text starts with its space).
    RtoObjectivesDashed => " Dashed lines are the plan's objectives.", "虚线为计划的目标。";
    NoFault => "No fault was injected, so no recovery was measured.", "未注入故障，因此没有测量恢复时间。";
    LostTags => "Lost messages (tags)", "丢失的邮件（标签）";
    ReconciledAt => "Reconciled over IMAP at: {0}.", "通过 IMAP 核对的站点：{0}。";
    /// Markdown: the number of samples, then where they are in report.json.
    SamplesInJson => "{0} probe samples in report.json ({1}).", "report.json 中有 {0} 个探测样本（{1}）。";
    SamplesOverDrill => "{0} probe samples over the drill; a mark per sample (merged where they meet), the worst outcome shown where several share a pixel.",
        "演练期间共 {0} 个探测样本；每个样本一个标记（相邻的合并显示），多个样本落在同一像素时显示最差的结果。";
    NoFindings => "None: every check passed and every objective was met.", "无：所有检查均已通过，所有目标均已达成。";
    PhasesIntro => "Times are relative to the start of the drill. Events of the target and of the probes are listed under the phase whose step was running when they happened.",
        "时间均相对于演练开始。目标系统和探测的事件列在其发生时正在执行的步骤所属的阶段下。";
    NoStep => "No step in this phase.", "此阶段没有步骤。";
    NoObjectives => "The plan sets no objectives.", "该计划未设定目标。";
    NoGap => "No gap was measured.", "没有测得中断。";
    NoProbe => "No probe ran.", "没有运行探测。";
    LoadProfileLine => "Load: {0} messages/s to the MX, {1} submissions/s, {2} IMAP sessions in IDLE, {3} bytes a message, at most {4} connections per flow.",
        "负载：每秒 {0} 封邮件发往 MX，每秒 {1} 封提交，{2} 个 IMAP IDLE 会话，每封 {3} 字节，每个流最多 {4} 个连接。";
    IdleLine => "IMAP IDLE sessions: {0} pushes of new mail, {1} failures, {2} reconnections, the longest without a site {3}.",
        "IMAP IDLE 会话：推送新邮件 {0} 次，失败 {1} 次，重连 {2} 次，最长断开 {3}。";
    NoLoad => "No load ran.", "没有运行负载。";
    NoApproval => "No approval was recorded for this plan.", "该计划没有审批记录。";
    NoConfirmation => "No manual step was confirmed.", "没有确认任何人工步骤。";
    /// The HTML footer: the maildr version, then the drill id.
    Footer => "maildr {0} drill report {1}. The machine-readable record is report.json beside this file.",
        "maildr {0} 演练报告 {1}。机器可读的记录是本文件旁的 report.json。";

    // ------------------------------------------------------ keys and columns
    Plan => "Plan", "演练计划";
    PlanSha256 => "Plan SHA-256", "计划 SHA-256";
    DrillId => "Drill id", "演练 ID";
    Started => "Started", "开始";
    Finished => "Finished", "结束";
    Duration => "Duration", "时长";
    Objective => "Objective", "目标";
    Target => "Target", "目标值";
    Measured => "Measured", "实测值";
    Result => "Result", "结果";
    Phase => "Phase", "阶段";
    AfterTheFault => "After the fault", "故障后";
    Acknowledged => "Acknowledged", "已确认";
    Found => "Found", "已找到";
    Lost => "Lost", "丢失";
    Duplicated => "Duplicated", "重复";
    MissingDuringOutage => "Missing during the outage", "故障期间缺失";
    Deferred4xx => "Deferred (4xx)", "延迟 (4xx)";
    Refused5xx => "Refused (5xx)", "拒绝 (5xx)";
    GivenUp => "Given up", "放弃";
    Protocol => "Protocol", "协议";
    LongestGap => "Longest gap", "最长中断";
    From => "From", "起";
    To => "To", "止";
    Ok => "OK", "成功";
    Failed => "Failed", "失败";
    P50 => "p50", "p50";
    P90 => "p90", "p90";
    P99 => "p99", "p99";
    Window => "Window", "时段";
    WindowBefore => "before", "故障前";
    WindowDuring => "during", "故障中";
    WindowAfter => "after", "故障后";
    PerSecond => "Per second", "每秒";
    FailedAttempts => "Failed attempts", "失败的尝试";
    StepNumber => "#", "#";
    Step => "Step", "步骤";
    Outcome => "Outcome", "结果";
    Detail => "Detail", "详情";
    At => "At", "时间";
    Source => "Source", "来源";
    Event => "Event", "事件";
    ApprovedBy => "Approved by", "审批人";
    EnvTarget => "Target", "目标环境";
    Location => "Location", "位置";
    Domain => "Domain", "域名";
    MaildrVersion => "maildr version", "maildr 版本";
    Host => "Host", "主机";
    Os => "OS", "操作系统";
    Site => "Site", "站点";
    Role => "Role", "角色";
    Address => "Address", "地址";

    // ----------------------------------------------------------------- cards
    CardDuration => "Duration", "时长";
    CardRtoTotal => "RTO total", "RTO 合计";
    CardLost => "Acknowledged mail lost", "已确认邮件丢失";
    CardCritical => "Critical findings", "严重发现";

    // ---------------------------------------------------------------- charts
    RtoChartTitle => "Recovery time: each phase in milliseconds after the fault", "恢复时间：各阶段在故障后的毫秒数";
    ProbeChartTitle => "Probe results over the drill, one lane per protocol", "演练期间的探测结果，每个协议一条泳道";
    FaultMarker => "fault", "故障";
    RestoreMarker => "restore", "恢复";
    /// Right after a bar's value: the objective's target (the English text
    /// starts with its space; full-width brackets bring their own).
    TargetNote => " (target {0})", "（目标 {0}）";
    /// The tooltip of an objective's dashed line: its name, then its target.
    ObjectiveLine => "objective {0}: {1}", "目标 {0}：{1}";
    NoSamples => "no samples", "无样本";
    /// The row of targets beyond the row limit.
    OtherTargets => "other", "其他";
    Continuing => "continuing", "持续";
    /// A run of marks: protocol, target, what started in it, from, to.
    MarkRun => "{0} {1}: {2}, {3} to {4}", "{0} {1}：{2}，{3} 至 {4}";
    /// A fault or restore line: its kind, when, its detail.
    EventLine => "{0} at {1}: {2}", "{0} 于 {1}：{2}";
    LegendOk => "ok", "成功";
    LegendDeferred => "deferred (4xx)", "延迟 (4xx)";
    LegendFailed => "refused, timeout, unreachable", "拒绝、超时、不可达";

    // ------------------------------------------------ against the previous drill
    AgainstPrevious => "Against the previous drill", "与上次演练对比";
    /// The previous drill's id and start; then the two regression thresholds.
    ComparedWith => "Compared with drill {0}, started {1}, the newest earlier drill of this scenario that was neither aborted nor a tabletop exercise. A phase counts as worse when it is more than {2} % and at least {3} slower.",
        "对比对象：演练 {0}，开始于 {1}，即本场景中最近一次既未中止也非桌面推演的演练。某阶段比上次慢 {2}% 以上且至少慢 {3} 时计为变差。";
    NothingWorse => "Nothing got worse than in the previous drill.", "与上次演练相比，没有变差的项。";
    /// The number of figures that got worse.
    WorseCount => "{0} worse than in the previous drill.", "{0} 项比上次演练差。";
    Figure => "Figure", "指标";
    ThisDrill => "This drill", "本次演练";
    PreviousDrill => "Previous drill", "上次演练";
    Change => "Change", "变化";
    Worse => "worse", "变差";
    VerdictKey => "Verdict", "结论";

    // -------------------------------------------------------------- tabletop
    TabletopReportTitle => "Tabletop exercise report: {0}", "桌面推演报告：{0}";
    /// The HTML page title of a tabletop: the verdict word, then the plan name.
    TabletopPageTitle => "Tabletop exercise {0}: {1}", "桌面推演{0}：{1}";
    TabletopHeading => "Tabletop exercise", "桌面推演";
    TabletopIntro => "No fault was injected and nothing was measured: each step was presented to the participants, the one holding its role acknowledged it and recorded a decision, and the exercise is graded on their times.",
        "未注入任何故障，也未做任何测量：每个步骤都展示给参与者，由承担该步骤角色的人确认并记录决策，演练按他们所用的时间评定。";
    /// The answers file's name is the argument.
    ClockSimulated => "Times are simulated: they are the ones stated in the answers file {0}, so the same file always gives the same times.",
        "时间为模拟时间：取自答复文件 {0} 中写明的时间，同一文件总是得到相同的时间。";
    ClockWall => "Times are the wall clock's, as the participants answered at the terminal.",
        "时间为实际时钟时间，即参与者在终端作答的时间。";
    Participants => "Participants", "参与者";
    Name => "Name", "姓名";
    NamedIn => "Named in", "来源";
    FromCommandLine => "command line", "命令行";
    FromPlan => "plan", "演练计划";
    StepsAndDecisions => "Steps, acknowledgements and decisions", "步骤、确认与决策";
    AcknowledgedBy => "Acknowledged by", "确认人";
    Presented => "Presented", "展示";
    AcknowledgedAt => "Acknowledged", "确认";
    Decided => "Decided", "决策";
    Budget => "Budget", "时限";
    Decision => "Decision", "决策内容";
    Nobody => "nobody", "无人确认";
    NoDecision => "none recorded", "未记录";
    DecisionRequired => "required", "必填";
    /// A timed wait's budget: its duration is the argument.
    BudgetOfWait => "{0}, the wait's timeout", "{0}（等待超时）";
    RecoveryByDecisions => "Recovery timed by the decisions", "按决策计时的恢复";
    /// The number of the first fault step is the argument.
    RecoveryIntro => "Each phase from the presentation of the first fault step (step {0}) to the decision of the step that ends it.",
        "各阶段从首个故障步骤（步骤 {0}）展示时起计时，至结束该阶段的步骤作出决策时止。";
    NoFaultStep => "The plan has no fault step, so no recovery was timed.", "该计划没有故障步骤，因此没有计时恢复过程。";
    RecoveryDns => "DNS follows the primary", "DNS 指向主站点";
    EndedByStep => "Ended by step", "结束步骤";
    NoSuchStep => "no such step", "无此步骤";
    NotReached => "not reached", "未达到";
    /// The objective keys are the argument.
    NotGraded => "Not judged by a tabletop exercise (nothing ran, so no mail was counted and no latency measured): {0}.",
        "桌面推演无法评定以下目标（没有实际运行，因此既未统计邮件，也未测量延迟）：{0}。";
    /// The unit `steps` of the tabletop's objective.
    UnitSteps => "step(s)", "个步骤";
    CardStepsAcknowledged => "Steps acknowledged", "已确认步骤";
    CardRecoveryParticipants => "Recovery, participants' time", "恢复（参与者用时）";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages that read the same in both languages.
    const NEUTRAL: [Msg; 4] = [Msg::P50, Msg::P90, Msg::P99, Msg::StepNumber];

    fn is_cjk(c: char) -> bool {
        matches!(c, '\u{3000}'..='\u{303f}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{ff00}'..='\u{ffef}')
    }

    fn placeholders(s: &str) -> Vec<String> {
        let mut out: Vec<String> =
            s.split('{').skip(1).map(|p| p.split('}').next().unwrap_or_default().to_string()).collect();
        out.sort();
        out
    }

    #[test]
    fn every_message_has_an_english_and_a_chinese_text() {
        for &msg in Msg::ALL {
            let (en, zh) = msg.texts();
            assert!(!en.trim().is_empty(), "{msg:?} has no English text");
            assert!(!zh.trim().is_empty(), "{msg:?} has no Chinese text");
            assert!(!en.chars().any(is_cjk), "{msg:?}: Chinese in the English text {en:?}");
            if NEUTRAL.contains(&msg) {
                assert_eq!(en, zh, "{msg:?} is listed as the same in both languages");
            } else {
                assert!(zh.chars().any(is_cjk), "{msg:?}: the Chinese text {zh:?} is not Chinese");
            }
        }
    }

    #[test]
    fn both_texts_of_a_message_take_the_same_numbered_arguments() {
        for &msg in Msg::ALL {
            let (en, zh) = msg.texts();
            let (pe, pz) = (placeholders(en), placeholders(zh));
            assert_eq!(pe, pz, "{msg:?}: {en:?} and {zh:?} take different arguments");
            let expected: Vec<String> = (0..pe.len()).map(|i| i.to_string()).collect();
            assert_eq!(pe, expected, "{msg:?}: placeholders are {{0}}, {{1}}, ... each once");
            assert_eq!(en.matches('}').count(), pe.len(), "{msg:?}: a stray brace in {en:?}");
            assert_eq!(zh.matches('}').count(), pz.len(), "{msg:?}: a stray brace in {zh:?}");
        }
    }

    #[test]
    fn no_text_holds_markup_for_html_or_markdown() {
        // The views print these unescaped; markup belongs in the views.
        for &msg in Msg::ALL {
            let (en, zh) = msg.texts();
            for text in [en, zh] {
                let bad: Vec<char> = text.chars().filter(|c| "<>&\"|*_`[]\\~".contains(*c)).collect();
                assert!(bad.is_empty(), "{msg:?}: {text:?} holds {bad:?}");
            }
        }
    }

    #[test]
    fn arguments_fill_their_own_placeholders_only() {
        assert_eq!(Lang::En.fmt(Msg::ObjectiveLine, &["rto_smtp_ms", "{1}"]), "objective rto_smtp_ms: {1}");
        assert_eq!(Lang::Zh.fmt(Msg::ReportTitle, &["北京 {0}"]), "演练报告：北京 {0}");
        assert_eq!(
            Lang::Zh.fmt(Msg::MarkRun, &["smtp", "bj", "3 超时", "+00:01.000", "+00:02.000"]),
            "smtp bj：3 超时，+00:01.000 至 +00:02.000"
        );
    }

    #[test]
    fn languages_parse_from_their_codes_only() {
        assert_eq!("zh".parse::<Lang>(), Ok(Lang::Zh));
        assert_eq!("en".parse::<Lang>(), Ok(Lang::En));
        for bad in ["", "ZH", "zh-CN", "fr"] {
            let err = bad.parse::<Lang>().unwrap_err().to_string();
            assert!(err.contains("zh or en"), "{err}");
        }
        assert_eq!(Lang::default(), Lang::En);
        assert_eq!(Lang::Zh.html_tag(), "zh-CN");
        assert_eq!(serde_json::to_string(&Lang::Zh).unwrap(), "\"zh\"");
    }
}
