// mlobs: every hour, the run records of the hour before, per pipeline, step, status and reason (run
// ids dropped): how many runs ended and their mean execution time, into the bucket mlobs_downsampled.
option task = {name: "mlobs-downsample-run-records", every: 1h, offset: 5m}

data =
    from(bucket: "mlobs")
        |> range(start: -task.every)
        |> filter(fn: (r) => r._measurement == "run_record" and r._field == "execution_time_ms")
        |> group(columns: ["_measurement", "pipeline", "step", "status", "reason"])

data
    |> aggregateWindow(every: task.every, fn: mean, createEmpty: false)
    |> set(key: "_field", value: "mean_execution_time_ms")
    |> to(bucket: "mlobs_downsampled")

data
    |> aggregateWindow(every: task.every, fn: count, createEmpty: false)
    |> set(key: "_field", value: "runs")
    |> to(bucket: "mlobs_downsampled")
