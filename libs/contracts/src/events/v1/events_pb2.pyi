import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventEnvelope(_message.Message):
    __slots__ = ("id", "type", "source", "time", "subject", "traceparent", "tracestate", "data")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    source: str
    time: _timestamp_pb2.Timestamp
    subject: str
    traceparent: str
    tracestate: str
    data: _any_pb2.Any
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., source: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject: _Optional[str] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ..., data: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class UserRegistered(_message.Message):
    __slots__ = ("user_id", "email", "full_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    email: str
    full_name: str
    def __init__(self, user_id: _Optional[str] = ..., email: _Optional[str] = ..., full_name: _Optional[str] = ...) -> None: ...

class UserUpdated(_message.Message):
    __slots__ = ("user_id", "email", "full_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    email: str
    full_name: str
    def __init__(self, user_id: _Optional[str] = ..., email: _Optional[str] = ..., full_name: _Optional[str] = ...) -> None: ...

class UserDeleted(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ProductChanged(_message.Message):
    __slots__ = ("product_id", "sku", "name", "price_cents", "stock")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    sku: str
    name: str
    price_cents: int
    stock: int
    def __init__(self, product_id: _Optional[str] = ..., sku: _Optional[str] = ..., name: _Optional[str] = ..., price_cents: _Optional[int] = ..., stock: _Optional[int] = ...) -> None: ...

class OrderLine(_message.Message):
    __slots__ = ("product_id", "quantity", "unit_price_cents", "product_name")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_NAME_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    unit_price_cents: int
    product_name: str
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price_cents: _Optional[int] = ..., product_name: _Optional[str] = ...) -> None: ...

class OrderCreated(_message.Message):
    __slots__ = ("order_id", "customer_id", "lines", "total_cents", "saga_mode")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    SAGA_MODE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    lines: _containers.RepeatedCompositeFieldContainer[OrderLine]
    total_cents: int
    saga_mode: str
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[OrderLine, _Mapping]]] = ..., total_cents: _Optional[int] = ..., saga_mode: _Optional[str] = ...) -> None: ...

class StockReserved(_message.Message):
    __slots__ = ("order_id", "saga_mode")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SAGA_MODE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    saga_mode: str
    def __init__(self, order_id: _Optional[str] = ..., saga_mode: _Optional[str] = ...) -> None: ...

class StockRejected(_message.Message):
    __slots__ = ("order_id", "reason", "saga_mode")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SAGA_MODE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    saga_mode: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ..., saga_mode: _Optional[str] = ...) -> None: ...

class StockReleased(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StockCommitted(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class PaymentApproved(_message.Message):
    __slots__ = ("order_id", "payment_id", "amount_cents")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    payment_id: str
    amount_cents: int
    def __init__(self, order_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., amount_cents: _Optional[int] = ...) -> None: ...

class PaymentDeclined(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OrderStatusChanged(_message.Message):
    __slots__ = ("order_id", "customer_id", "status", "reason", "total_cents", "saga_mode")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    SAGA_MODE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    status: str
    reason: str
    total_cents: int
    saga_mode: str
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., total_cents: _Optional[int] = ..., saga_mode: _Optional[str] = ...) -> None: ...
