background("lavender");
fill("orange");
rect(30, 300, 120, 80);
var bee = createSprite(300, 150);
bee.setAnimation("bee");
drawSprites();
text("Buzz", 280, 220);
