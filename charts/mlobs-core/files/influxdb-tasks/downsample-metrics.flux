// mlobs: every hour, the simple metrics of the hour before, per pipeline, step and name (run ids
// dropped), as their mean and count, into the bucket mlobs_downsampled.  docs/capacity.md says how
// to create the bucket and the task (`influx task create --file`), and when you need it.
option task = {name: "mlobs-downsample-metrics", every: 1h, offset: 5m}

data =
    from(bucket: "mlobs")
        |> range(start: -task.every)
        |> filter(fn: (r) => r._measurement == "metric" and r._field == "value")
        |> group(columns: ["_measurement", "pipeline", "step", "name"])

data
    |> aggregateWindow(every: task.every, fn: mean, createEmpty: false)
    |> set(key: "_field", value: "mean")
    |> to(bucket: "mlobs_downsampled")

data
    |> aggregateWindow(every: task.every, fn: count, createEmpty: false)
    |> set(key: "_field", value: "count")
    |> to(bucket: "mlobs_downsampled")
