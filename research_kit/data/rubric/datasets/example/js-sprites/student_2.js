var cat = createSprite(200, 340);
cat.setAnimation("cat");
cat.scale = 0.4;
var fish = createSprite(200, 20);
fish.setAnimation("fish");
fish.scale = 0.3;
fish.velocityY = 3;

function draw() {
  background("lightblue");
  if (fish.isTouching(cat)) {
    fish.y = 20;
    cat.scale = cat.scale + 0.02;
  }
  if (keyDown("space")) {
    fish.y = 20;
  }
  drawSprites();
}
