"""How product_service is reached: the gRPC servicer."""
