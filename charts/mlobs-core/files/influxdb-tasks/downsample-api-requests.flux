// mlobs: every 10 minutes, the model-API requests of the 10 minutes before, per service, endpoint,
// method and status class, one point a minute: how many there were and their mean duration.  The
// hashed user ids are not carried over.  Into the bucket mlobs_downsampled.
option task = {name: "mlobs-downsample-api-requests", every: 10m, offset: 1m}

data =
    from(bucket: "mlobs")
        |> range(start: -task.every)
        |> filter(fn: (r) => r._measurement == "api_request" and r._field == "duration_ms")
        |> group(columns: ["_measurement", "service", "endpoint", "method", "status"])

data
    |> aggregateWindow(every: 1m, fn: mean, createEmpty: false)
    |> set(key: "_field", value: "mean_duration_ms")
    |> to(bucket: "mlobs_downsampled")

data
    |> aggregateWindow(every: 1m, fn: count, createEmpty: false)
    |> set(key: "_field", value: "requests")
    |> to(bucket: "mlobs_downsampled")
