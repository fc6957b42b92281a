"""brokerstack's tasks. ``EXPOSED_TASKS`` maps the short names the API and CLI accept to the
registered task names; nothing outside it can be enqueued through the API."""

EXPOSED_TASKS: dict[str, str] = {
    "add": "worker.tasks.basic.add",
    "multiply": "worker.tasks.basic.multiply",
    "task_with_info": "worker.tasks.basic.task_with_info",
    "heartbeat": "worker.tasks.basic.heartbeat",
    "daily_report": "worker.tasks.basic.daily_report",
    "weekly_summary": "worker.tasks.basic.weekly_summary",
    "send_email": "worker.tasks.email.send_email",
    "send_welcome_email": "worker.tasks.email.send_welcome_email",
    "notify_admin_new_signup": "worker.tasks.email.notify_admin_new_signup",
    "long_batch_job": "worker.tasks.batch.long_batch_job",
    "step1": "worker.tasks.workflows.step1",
    "step2": "worker.tasks.workflows.step2",
    "step3": "worker.tasks.workflows.step3",
    "sum_results": "worker.tasks.workflows.sum_results",
    "noop": "worker.tasks.tools.noop",
    "sleep": "worker.tasks.tools.sleep",
    "fail": "worker.tasks.tools.fail",
}
