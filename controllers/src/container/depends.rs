//! `dependsOn`: whether each dependency of a Container meets its condition, checked before
//! every start (first apply, restart after a crash, after a daemon restart, after every workload
//! was killed). A dependency's recorded `Ready`/`Started` counts only while the runtime still
//! sees the very run the status describes (same pid): after a host reboot a stale `Ready=True`
//! does not let a dependent start before its dependency runs again.

use super::driver::{Observed, Runtimes};
use super::reconcile::Container;
use crate::context::Context;
use tend_schema::kinds::container::{Dependency, DependencyCondition};
use tend_schema::{ConditionStatus, Kind, ObjectKey};

/// The first dependency of `c` that does not meet its condition, said for people
/// (`container "db" is not Ready: ProbeFailed (…)`); `None` when all do.
pub(crate) async fn unmet(ctx: &Context, runtimes: &Runtimes, c: &Container) -> Option<String> {
    for d in &c.spec.depends_on {
        if let Some(why) = check(ctx, runtimes, c.metadata.ns(), d).await {
            return Some(why);
        }
    }
    None
}

async fn check(ctx: &Context, runtimes: &Runtimes, ns: &str, d: &Dependency) -> Option<String> {
    let want = d.condition.as_str();
    let key = ObjectKey::new(Kind::Container, ns, &d.container);
    let dep: Container = match ctx.get(&key).await {
        Ok(Some(o)) => match o.typed() {
            Ok(c) => c,
            Err(e) => return Some(format!("container {:?}: {e}", d.container)),
        },
        Ok(None) => return Some(format!("container {:?} does not exist", d.container)),
        Err(e) => return Some(format!("container {:?}: {e}", d.container)),
    };
    if dep.metadata.is_terminating() {
        return Some(format!("container {:?} is being deleted", d.container));
    }
    let st = &dep.status;
    let not = |what: String| Some(format!("container {:?} is not {want}: {what}", d.container));
    if d.condition == DependencyCondition::Completed {
        let phase = st.common.phase.as_deref().unwrap_or("Pending");
        return match phase {
            "Succeeded" => None,
            _ => not(format!("phase {phase}")),
        };
    }
    match st.common.condition(want) {
        Some(c) if c.status == ConditionStatus::True => {}
        Some(c) => return not(format!("{} ({})", c.reason, c.message)),
        None => return not("no status yet".into()),
    }
    // The condition must describe the run that exists now.
    let uid = dep.metadata.uid.clone().unwrap_or_default();
    let Some(rt) = runtimes.serving(&dep.spec) else {
        return not("its runtime is not available".into());
    };
    match rt.inspect(&uid).await {
        Ok(Observed::Running(r)) if Some(r.pid) == st.pid => None,
        Ok(Observed::Running(_)) => not("its new run has not reported yet".into()),
        Ok(_) => not("its workload is not running".into()),
        Err(e) => not(format!("cannot observe it: {e}")),
    }
}
