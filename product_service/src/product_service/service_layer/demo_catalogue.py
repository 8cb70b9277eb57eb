"""Demo products for a fresh catalogue, inserted once when PRODUCT_SEED_DEMO is on."""

from __future__ import annotations

from loguru import logger
from tienda_platform.ids import new_id

from product_service.domain.errors import SkuAlreadyExists
from product_service.domain.model import Product, ProductFields
from product_service.service_layer.services import Dependencies, record_product_changed

DEMO_PRODUCTS = (
    ProductFields(
        sku="MUG-CER-350",
        name="Ceramic coffee mug, 350 ml",
        description="Stoneware mug with a matte glaze. Dishwasher and microwave safe.",
        price_cents=1299,
        stock=120,
    ),
    ProductFields(
        sku="TEE-ORG-BLK-M",
        name="Organic cotton T-shirt, black, M",
        description="Heavyweight 180 g/m² organic cotton, regular fit, pre-shrunk.",
        price_cents=1999,
        stock=80,
    ),
    ProductFields(
        sku="BTL-STEEL-750",
        name="Insulated steel bottle, 750 ml",
        description="Double-walled stainless steel; keeps drinks cold for 24 h, hot for 12 h.",
        price_cents=2499,
        stock=60,
    ),
    ProductFields(
        sku="NB-A5-DOT",
        name="A5 dotted notebook",
        description="192 numbered pages of 100 g/m² paper, lay-flat binding, two ribbons.",
        price_cents=899,
        stock=200,
    ),
    ProductFields(
        sku="TOTE-CANVAS-NAT",
        name="Canvas tote bag, natural",
        description="Heavy cotton canvas with an inside pocket and long handles.",
        price_cents=1499,
        stock=150,
    ),
    ProductFields(
        sku="COF-BEAN-1KG",
        name="Whole coffee beans, 1 kg",
        description="Medium roast blend from Colombia and Brazil: chocolate, hazelnut, caramel.",
        price_cents=2899,
        stock=40,
    ),
    ProductFields(
        sku="HP-BT-ANC",
        name="Wireless noise-cancelling headphones",
        description="Bluetooth 5.3, 30 hours of battery, USB-C charging, foldable.",
        price_cents=7999,
        stock=25,
    ),
    ProductFields(
        sku="LAMP-LED-DESK",
        name="LED desk lamp",
        description="Dimmable, three colour temperatures, adjustable arm, USB-C powered.",
        price_cents=3999,
        stock=30,
    ),
)


async def seed_demo_products(*, deps: Dependencies) -> int:
    """Insert the demo products when the catalogue is empty; return how many were inserted."""
    now = deps.clock()
    async with deps.uow() as uow:
        if not await uow.products.is_empty():
            return 0
        try:
            for fields in DEMO_PRODUCTS:
                product = Product(
                    id=new_id(),
                    sku=fields.sku,
                    name=fields.name,
                    description=fields.description,
                    price_cents=fields.price_cents,
                    stock=fields.stock,
                    create_time=now,
                    update_time=now,
                )
                await uow.products.add(product)
                record_product_changed(uow, "product.created", product)
        except SkuAlreadyExists:
            # Another replica seeded at the same moment; its catalogue is as good as ours.
            return 0
        await uow.commit()
    logger.info("demo catalogue seeded", count=len(DEMO_PRODUCTS))
    return len(DEMO_PRODUCTS)
