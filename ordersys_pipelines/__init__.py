"""ordersys: an order-management back office orchestrated by Dagster."""
