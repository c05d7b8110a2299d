"""The HTTP edge every protocol adapter shares: JSON answers, the route table, the request's app and
data plane, domain errors mapped to statuses, and the pages a browser opens."""
