"""What the lab measures, built on lab.harness: chaos (faults counted), bench (speed, memory),
priority (order under load). The report reads their records; nothing here imports lab.report."""
