fill("red");
rect(50, 50, 100, 100);
background("white");
var fish = createSprite(200, 200);
fish.setAnimation("fish");
drawSprites();
text("Fish", 180, 300);
